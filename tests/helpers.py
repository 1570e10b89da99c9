"""`tests.helpers` is `testbed.helpers`: the helpers moved there to be shared with the
benches (which never import tests/). The old name stays for the tests that use it."""

import sys

import testbed.helpers

sys.modules[__name__] = testbed.helpers
