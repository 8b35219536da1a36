"""One job: its typed config, the checks before any work, its stages and bookkeeping."""
