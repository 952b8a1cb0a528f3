"""The ``edgeproxy`` subcommands, one module each (``cli.py`` registers them); ``options`` and
``common`` are what they share."""
