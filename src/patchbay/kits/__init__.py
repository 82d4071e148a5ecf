"""Web SDK kits: client-side integrations the browser loads, registered from descriptors,
connected to web inputs, and served to the SDK in its config (docs/kits.md)."""
