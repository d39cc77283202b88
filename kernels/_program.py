"""The engine's program format: one int64 row of ``NF`` fields per operation.

``row[0]`` is the kind (``OP_*``), ``row[1]`` the number of work items; the other fields are
listed by each kind's executor (``exec_*`` in its kernel module). Array operands are
(slot, offset) pairs into the engine's ``NSLOTS`` flat buffers (see ``_plan.py``).
"""
NSLOTS = 4  # input, output, arena, weights (see _plan.py)
NF = 48
OP_POINTWISE, OP_DEPTHWISE, OP_CONV3X3, OP_DENSE, OP_POOL, OP_BLOCK = 1, 2, 3, 4, 5, 6
