"""The ``soundsift`` command: ``main`` and the parser (``cli.main``), one module per command group
(``train``: training workflows; ``data``: benchmark, dataset tools, downloads; ``search``: index, search,
serve, tag). Handlers parse, call the library, print; the error policy is in ``main``."""
