"""Rule files (issue 12, item 1): validated on load with the file, line and key named; later definitions override
earlier ones where their scope matches; a changed file is reloaded, a broken change leaves the rules in force."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import alerts
from wearline.settings import AlertsSettings


def _settings(*paths: Path) -> AlertsSettings:
    return AlertsSettings(rules=list(paths))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[rule]]\nname = "hot"\nkind = "threshold"\nsensor = "temp"\nabove = "high"\n',
            ["line 5", "[[rule]] #1", "above", "valid number"],
        ),
        (
            '[[rule]]\nname = "hot"\nkind = "threshold"\nsensor = "temp"\nabove = 80\n\n'
            '[[rule]]\nname = "cold"\nkind = "threshold"\nsensor = "temp"\nbelow = 5\nabuve = 3\n',
            ["line 12", "[[rule]] #2", "abuve", "Extra inputs"],
        ),
        ('[[rule]]\nname = "x"\nkind = "thresh"\n', ["line 3", "[[rule]] #1, kind:", "'anomaly'"]),
        (
            '[[rule]]\nname = "a"\nkind = "anomaly"\nopen_ratio = 1.5\nhold_ratio = 2\n',
            ["line 1", "hold_ratio (2.0) is above open_ratio (1.5)"],
        ),
        ('[[rule]]\nname = "v"\nkind = "vibration_zone"\nsensor = "vib"\n', ["machine_class (I-IV)"]),
        ('[[rule]]\nname = "v"\nkind = "vibration_zone"\nsensor = "vib"\nmachine_class = "V"\n', ["line 5"]),
        ('[[rule]]\nname = "t"\nkind = "threshold"\nsensor = "s"\nabove = 5\nbelow = 1\n', ["exactly one of above"]),
        ('[[rule]]\nname = "t"\nkind = "threshold"\nsensor = "s"\nabove = 5\nclear_at = 6\n', ["no hysteresis"]),
        ('[[rule]]\nname = "Bad Name"\nkind = "silence"\n', ["line 2", "name"]),
        ('[[rule]]\nname = "d"\nkind = "dead_letters"\nwhere = { machine = "m1" }\n', ["gateways"]),
        ("[[escalation]]\nack_timeout_s = 600\n", ["[[escalation]] #1", "levels", "Field required"]),
        ('[[rule]]\nname = "x"\nkind = "silence"\n[broken\n', ["line 4: not valid TOML", "column 8"]),
        ('[[rules]]\nname = "x"\n', ["top level", "rules"]),
    ],
)
def test_a_bad_rule_file_is_refused_naming_file_line_and_key(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = _write(tmp_path / "site.toml", text)
    with pytest.raises(alerts.RuleError) as exc:
        alerts.load_rules(_settings(path))
    message = str(exc.value)
    print(message)
    assert str(path) in message
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_a_missing_rule_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(alerts.RuleError, match=r"alerts\.rules: .*absent\.toml does not exist"):
        alerts.load_rules(_settings(tmp_path / "absent.toml"))


def test_the_last_matching_definition_of_a_name_applies(tmp_path: Path) -> None:
    plant = _write(
        tmp_path / "10-plant.toml",
        """
[[rule]]
name = "bearing-temp"
kind = "threshold"
where = { machine_type = "pump" }
sensor = "bearing_temp_c"
above = 80

[[rule]]
name = "quiet"
kind = "silence"
""",
    )
    site = _write(
        tmp_path / "20-site-b.toml",
        """
[[rule]]
name = "bearing-temp"
kind = "threshold"
where = { site = "plant-b", machine_type = "pump" }
sensor = "bearing_temp_c"
above = 70

[[rule]]
name = "quiet"
kind = "silence"
where = { site = "plant-b", line = "spare" }
enabled = false

[[rule]]
name = "remaining_life"
kind = "remaining_life"
where = { site = "plant-b" }
horizon_h = 500

[[escalation]]
where = { site = "plant-b" }
ack_timeout_s = 600
levels = ["line lead", "plant manager"]
""",
    )
    rules = alerts.load_rules(AlertsSettings(rules=[tmp_path], rul_horizon_h=100))
    assert rules.files == (plant, site), "a folder is read in file-name order"

    def applied(site_: str, line: str, mtype: str | None) -> dict[str, object]:
        return {r.name: r for r in rules.for_machine("acme", site_, line, "m1", mtype)}

    a_pump = applied("plant-a", "l1", "pump")
    assert a_pump["bearing-temp"].above == 80  # type: ignore[attr-defined]
    assert a_pump["remaining_life"].horizon_h == 100  # type: ignore[attr-defined]
    assert set(a_pump) == {"anomaly", "remaining_life", "bearing-temp", "quiet"}
    b_pump = applied("plant-b", "l1", "pump")
    assert b_pump["bearing-temp"].above == 70  # type: ignore[attr-defined]
    assert b_pump["remaining_life"].horizon_h == 500  # type: ignore[attr-defined]
    assert "bearing-temp" not in applied("plant-b", "l1", "fan")
    assert "quiet" not in applied("plant-b", "spare", "pump"), "enabled = false switches it off there"
    assert "quiet" in applied("plant-b", "l1", "pump")
    assert rules.escalation_for("acme", "plant-b", "l1").levels == ["line lead", "plant manager"]
    assert rules.escalation_for("acme", "plant-a", "l1").ack_timeout_s == AlertsSettings().ack_timeout_s


def test_vibration_zones_follow_the_machine_class() -> None:
    assert alerts.ISO_20816_ZONES["II"] == (1.12, 2.8, 7.1)
    rules = alerts.RuleSet(rules=(), escalations=())
    assert rules.for_machine("t", "s", "l", "m", None) == []


def test_a_changed_file_is_reloaded_and_a_broken_change_keeps_the_rules_in_force(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.toml", '[[rule]]\nname = "hot"\nkind = "threshold"\nsensor = "t"\nabove = 80\n')
    book = alerts.RuleBook(_settings(path))

    def above() -> float:
        (hot,) = [r for r in book.refresh().rules if r.name == "hot"]
        return float(hot.above)

    assert above() == 80
    _write(path, '[[rule]]\nname = "hot"\nkind = "threshold"\nsensor = "t"\nabove = 85.5\n')
    os.utime(path, (1, 1))  # a new stamp even within the file system's time resolution
    assert above() == 85.5
    assert (book.reloads, book.reload_errors) == (1, 0)
    _write(path, '[[rule]]\nname = "hot"\nkind = "threshold"\nsensor = "t"\nabove = "x"\n')
    os.utime(path, (2, 2))
    assert above() == 85.5, "a broken file must not replace the rules in force"
    assert (book.reloads, book.reload_errors) == (1, 1)
    assert above() == 85.5
    assert book.reload_errors == 1, "the same broken file is reported once, not every pass"
    _write(path, '[[rule]]\nname = "hot"\nkind = "threshold"\nsensor = "t"\nabove = 90\n')
    os.utime(path, (3, 3))
    assert above() == 90
    assert (book.reloads, book.reload_errors) == (2, 1)


def test_the_alerts_stage_refuses_to_start_on_a_bad_rule_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.toml", '[[rule]]\nname = "hot"\nkind = "threshold"\nsensor = "t"\n')
    with pytest.raises(alerts.RuleError, match="exactly one of above or below"):
        alerts.RuleBook(_settings(path))


def test_rules_check_validates_the_shipped_rules_and_names_a_broken_files_line(tmp_path: Path) -> None:
    wearline = str(Path(sys.executable).with_name("wearline"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEARLINE_")}
    shipped = Path(__file__).parents[2] / "deploy" / "rules"
    ok = subprocess.run(
        [wearline, "rules", "check", str(shipped)], env=env, capture_output=True, text=True, check=False
    )
    print(ok.stdout, ok.stderr)
    assert ok.returncode == 0
    assert "vibration-zone" in ok.stdout
    assert "ok: 8 rules (6 from 1 file(s))" in ok.stdout
    bad = _write(tmp_path / "bad.toml", '[[rule]]\nname = "x"\nkind = "silence"\nfactor = 1\n')
    refused = subprocess.run(
        [wearline, "rules", "check", str(bad)], env=env, capture_output=True, text=True, check=False
    )
    print(refused.stderr)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {bad} line 4: [[rule]] #1, factor: Input should be greater than or equal to 2"
    ]
