"""sandglass harness: analytical costs of int8 graphs (``analysis``), measurements through the compiler's
CLIs (``measure``), and the report (``report``: JSON + markdown + plots, with the progress shown while it
runs and its log, ``progress``) of what MobileNeXt's identity tensor multiplier saves on every target."""
