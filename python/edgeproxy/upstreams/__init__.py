"""The transport to providers: the one HTTP/1.1 client (pooled keep-alive connections) every
attempt and health probe goes through, and ``send``, which sends an attempt in its candidate's
wire (``edgeproxy.wires``)."""
