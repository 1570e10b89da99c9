"""conveyor's tests.

`tests.helpers` and `tests.fleet` are old names of `testbed.helpers` and `testbed.fleet`
(moved to testbed/ to be shared with the benches, which never import tests/): they are
registered here, so that `from tests.helpers import wait_for` still imports the one module.
New code imports testbed.
"""

import sys

import testbed.fleet
import testbed.helpers

helpers = sys.modules[f"{__name__}.helpers"] = testbed.helpers
fleet = sys.modules[f"{__name__}.fleet"] = testbed.fleet
