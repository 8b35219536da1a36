"""qa-compress's Hydra sweepers (`hydra/sweeper=checked`, the default grid, and `pareto`), found through Hydra's
hydra_plugins namespace."""
