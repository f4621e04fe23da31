"""YOLOv5 checkpoints (.pt, pruned or not), read without running their code and mapped to Darknet form."""

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip format
PICKLE_PROTOCOL_OPCODE = 0x80  # the first byte of a protocol 2+ pickle (torch.save's legacy format)
TAR_MAGIC, TAR_MAGIC_END = b"ustar", 262  # a POSIX tar header says "ustar" at bytes 257-261 (torch's oldest format)
