from wearline.cli import main

main()
