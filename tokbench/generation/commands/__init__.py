"""The ``tokbench gen`` sub-commands, one module each (see `tokbench.commands.gen`)."""
