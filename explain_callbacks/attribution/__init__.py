"""What a check computes: probes, model adapters, the Integrated Gradients engine and its
quadrature, word spans, and the records a check produces (``ProbeAttribution``, ``Snapshot``).

The base room: it imports nothing else of the package."""
