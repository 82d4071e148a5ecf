"""Segment: real-time audiences over resolved users, sent to partners as Audience Data.

* :mod:`.criteria`: the types of an audience definition (what the parser returns);
* :mod:`.parse`: definitions from JSON or YAML, refused with a JSON path and a reason;
* :mod:`.evaluate`: pure evaluation of criteria over what is known of a user;
* :mod:`.engine`: incremental evaluation over the backend's audience store;
* :mod:`.stage`: the pipeline stage;
* :mod:`.service`: the operations the CLI and the admin API share.
"""


def runs_compiled() -> bool:
    """Whether the segment stage runs compiled (a wheel's build compiles it with mypyc:
    ``hatch_build.py``); an editable install runs the ``.py`` files."""
    from patchbay.segment import engine

    return not engine.__file__.endswith(".py")
