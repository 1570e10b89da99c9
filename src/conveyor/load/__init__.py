"""Load tests of a release: driven by Locust in a child process, judged against the
previous release's record by the canary judge's sequential tests."""
