"""``python -m tbpr`` (also how torchrun launches training: ``torchrun -m tbpr train ...``)."""

import sys

from tbpr.cli import main

sys.exit(main())
