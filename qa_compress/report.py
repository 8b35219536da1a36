"""`python -m qa_compress.report`: the entry point of `qa_compress.sweep.report`, kept at its documented name."""

import sys

from qa_compress.sweep.report import main

if __name__ == "__main__":
    sys.exit(main())
