import sys

from conveyor.router.main import main

sys.exit(main())
