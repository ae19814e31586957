"""tokbench's protocol presets, one module each, registered in the entry-point group
``tokbench.protocols`` (see `tokbench.protocol` and README "Reproducing published tables")."""
