"""The embedded experiment on the letter-chains task (README, "The embedded experiment"): its arms
(arms.py: named config overrides, run side by side), their comparison (compare.py); tools/study.py,
tools/transplant.py and tools/trace_errors.py run and read it over seeds."""
