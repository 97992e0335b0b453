"""scripts/train.py under the original Flow-GRPO's name: an alias for its users (it trains every family the same way)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
