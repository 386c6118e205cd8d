"""Regenerate ``sparkplug_b_pb2.py`` and its stub from ``sparkplug_b.proto`` (a development step, not run at
install: the generated module is committed, so a plain install needs only the ``protobuf`` runtime).

Run ``python -m wearline.sparkplug.generate`` with grpcio-tools installed.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    from grpc_tools import protoc  # type: ignore[import-untyped]  # noqa: PLC0415  (development-only tool)

    here = Path(__file__).parent
    return int(
        protoc.main(
            ["protoc", f"-I{here}", f"--python_out={here}", f"--pyi_out={here}", str(here / "sparkplug_b.proto")]
        )
    )


if __name__ == "__main__":
    sys.exit(main())
