"""yolobn's tests (a regular package: Ultralytics 8.3.0 installs a top-level ``tests`` package of its own,
which would otherwise shadow this folder)."""
