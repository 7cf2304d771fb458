"""`make reliability`: fault injection with real broker and worker processes. Not shipped in
the package."""
