"""The joint subword vocabulary (paper §5.1) and its special ids.

This module is the only home of the special token ids; every other module
imports them from here.
"""

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
