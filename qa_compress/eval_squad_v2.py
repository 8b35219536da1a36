"""`python -m qa_compress.eval_squad_v2`: the entry point of `qa_compress.evaluate.eval_squad_v2`."""

import sys

from qa_compress.evaluate.eval_squad_v2 import main

if __name__ == "__main__":
    sys.exit(main())
