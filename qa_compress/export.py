"""`python -m qa_compress.export`: the entry point of `qa_compress.serve.export`, kept at its documented name."""

import sys

from qa_compress.serve.export import main

if __name__ == "__main__":
    sys.exit(main())
