"""Partners: Firehose integrations (modules) the platform sends data to.

``targets`` says where a partner is reached (msgspec only), ``transport`` sends one Firehose
message there over HTTPS or AWS Lambda, ``registration`` asks a partner to describe itself
and stores it as a module, and ``verify`` runs the checks a platform runs before it lists an
integration. See docs/modules.md.
"""
