//! HTTP message-encryption framing: multipart/encrypted bodies (MS-WSMV 2.2.9.1). See issue 2.
