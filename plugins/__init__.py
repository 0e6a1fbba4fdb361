"""xai-bridge's built-in plugins (installed under the import name ``xai_bridge_builtins``).

Each module here is an ordinary plugin registered through the ``xai_bridge``
entry-point group, exactly as a third-party plugin would be. Modules whose
name is a family (``toolkit``, ``architectures``, ...) only register; the code
that runs lives in sibling modules they import inside factories, so listing
plugins stays cheap.
"""
