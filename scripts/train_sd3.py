"""scripts/train.py under the name the original Flow-GRPO and this project's docs use for SD3 runs; it trains
any family the same way.

    accelerate launch scripts/train_sd3.py --config config/grpo.py:geneval_sd3
    python scripts/train_sd3.py --config config/tiny.py:tiny
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
