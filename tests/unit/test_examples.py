"""The shipped examples are valid as shipped (the config itself: tests/unit/test_config_file.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at this environment's lag-exporter.
    installed = Path(sys.executable).parent / "lag-exporter"
    assert installed.exists()
    unit = (EXAMPLES / "lag-exporter.service").read_text()
    assert "ExecStart=/usr/local/bin/lag-exporter " in unit
    (tmp_path / "lag-exporter.service").write_text(
        unit.replace("/usr/local/bin/lag-exporter", str(installed)))
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed to check the unit (apt-get install systemd)"
    done = subprocess.run([analyze, "verify", str(tmp_path / "lag-exporter.service")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""
