"""The server's defaults, defined once: the CLI, `serve()` and the app's option dataclasses all read these.
(No imports: `visiontune --help` reads them without loading the web stack.)"""

HOST = "127.0.0.1"  # loopback only
PORT = 8000
MAX_BATCH = 8  # requests run together at most
MAX_WAIT_MS = 10.0  # how long a request waits for company
MAX_BODY_MB = 25.0  # request body and image size limit
MAX_PIXELS = 40_000_000  # decoded width x height; a decompression bomb stops here, before decoding
MAX_IMAGES_PER_REQUEST = 16
