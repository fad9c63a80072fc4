"""numba kernel: walk the token trie against the (partially built) DFA, setting the allowed tokens' bits."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def walk_trie(
    child_ptr,
    child_byte,
    child_node,
    tok_ptr,
    tok_ids,
    trans,
    known,
    final,
    stack_node,
    stack_state,
    nstack,
    words,
    pend_node,
    pend_state,
):
    """Depth-first walk from the (trie node, DFA state) pairs on the stack.

    A token ending at child `c` is allowed when its last byte leads to a live state.
    Pairs whose state row is not built yet are returned in `pend_*`; returns how many.
    """
    npend = 0
    one = np.uint32(1)
    while nstack > 0:
        nstack -= 1
        node = stack_node[nstack]
        s = stack_state[nstack]
        if known[s] == 0:
            pend_node[npend] = node
            pend_state[npend] = s
            npend += 1
            continue
        for k in range(child_ptr[node], child_ptr[node + 1]):
            ns = trans[s, child_byte[k]]
            if ns < 0:
                continue
            c = child_node[k]
            for j in range(tok_ptr[c], tok_ptr[c + 1]):
                t = tok_ids[j]
                words[t >> 5] |= one << np.uint32(t & 31)
            if child_ptr[c + 1] > child_ptr[c]:
                stack_node[nstack] = c
                stack_state[nstack] = ns
                nstack += 1
    return npend
