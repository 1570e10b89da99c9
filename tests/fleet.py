"""`tests.fleet` is `testbed.fleet`: the fleet helpers moved there to be shared with the
benches (which never import tests/). The old name stays for the tests that use it."""

import sys

import testbed.fleet

sys.modules[__name__] = testbed.fleet
