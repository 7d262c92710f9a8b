"""A pytest plugin for runs that can be cut off at a time limit (scripts/gpu_check.sh): each failure's report is
printed when it happens, not only in the summary at the end, which a killed run never reaches."""


def pytest_runtest_logreport(report):
    if report.failed:
        print(f"\nFAILED {report.nodeid} ({report.when})\n{report.longreprtext}\n", flush=True)
