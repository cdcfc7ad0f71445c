"""`python -m lag_exporter` is the same as the `lag-exporter` command."""

from lag_exporter.cli import main

main()
