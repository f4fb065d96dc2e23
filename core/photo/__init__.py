"""A photo's way into a catalogue's domain: untrusted bytes decoded (``decode``), the garment found (``isolate``),
the catalogue's conversion (``domain``), and the inspectable query steps the Search page shows (``query_steps``).

Imports only the plumbing at ``core``'s top level."""
