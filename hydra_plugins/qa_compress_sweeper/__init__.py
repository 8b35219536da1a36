"""qa-compress's Hydra sweeper plugin (`hydra/sweeper=pareto`), found through Hydra's hydra_plugins namespace."""
