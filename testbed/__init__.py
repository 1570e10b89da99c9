"""What the tests and the benches share: real processes and what drives them.

A server (`helpers.ServerProcess`), agents with their routers and the sample app on
loopback addresses (`fleet`), one load generator (`fleet.LoadGenerator`), one fast
stand-in instance (`backend`), git repositories and `wait_for`. It imports the product
only; `tests/` and `bench/` import it and never each other.
"""
