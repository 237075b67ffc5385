//! The textbook sorted timer list, as the "before": a Rust port of `sort_timer_lst`
//! (`lst_timer.h`) from the epoll server of *Linux High-Performance Server Programming*,
//! the design in which SIGALRM fires every time slot and `tick()` closes what is due.
//!
//! One doubly-linked list ordered by deadline, ascending, equal deadlines in insertion order:
//! - `add_timer` walks from the head to the first later deadline: O(n);
//! - `adjust_timer` (a deadline moved later) unlinks and walks on from the old position: O(n);
//! - `del_timer` unlinks by handle: O(1);
//! - `tick` pops from the head while the head is due: O(1) per fired timer;
//! - the next deadline is the head's: O(1).
//!
//! The C original allocates one node per timer with `new` and links pointers; here the nodes
//! live in a `Vec` arena linked by `u32` indices, with a free list, so that a handle is an
//! index and a node is 24 bytes. The original has no way to move a deadline earlier; [`reset`]
//! to an earlier deadline unlinks and inserts from the head (O(n)), like `add_timer`.
//!
//! Two helpers exist for the benchmark's untimed bookkeeping only, never timed:
//! [`SortedList::build`] links a whole arena at once, and [`SortedList::append`] and
//! [`SortedList::restore`] put back timers without a walk from the head.
//!
//! [`reset`]: SortedList::reset

/// The end of a list, and the absent index.
const NIL: u32 = u32::MAX;

/// One timer. 24 bytes: deadline 8, links 8, value 4, live 1, padding 3.
struct Node {
    deadline: u64,
    prev: u32,
    next: u32,
    /// The value while live; the next free node while vacant (the links are kept, see
    /// [`SortedList::restore`]).
    value: u32,
    live: bool,
}

/// Handle of a live timer: the node's index in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListKey(u32);

pub struct SortedList {
    nodes: Vec<Node>,
    head: u32,
    tail: u32,
    /// Head of the free list of vacant nodes, linked through `Node::value`.
    free: u32,
    len: usize,
}

impl SortedList {
    pub fn with_capacity(n: usize) -> Self {
        SortedList { nodes: Vec::with_capacity(n), head: NIL, tail: NIL, free: NIL, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Bench setup only: a list of `items` (deadline, value), stored in the arena in the
    /// order given (node `i` is item `i`) and linked in deadline order (ties in the given
    /// order), as if inserted one by one, without the O(n²) walks. The arena grows by
    /// pushes, like `insert` would grow it.
    pub fn build(items: impl IntoIterator<Item = (u64, u32)>) -> (Self, Vec<ListKey>) {
        let mut list = SortedList::with_capacity(0);
        for (deadline, value) in items {
            list.nodes.push(Node { deadline, prev: NIL, next: NIL, value, live: true });
        }
        let count = u32::try_from(list.nodes.len()).expect("fewer than 2^32 timers");
        let mut order: Vec<u32> = (0..count).collect();
        order.sort_by_key(|&i| (list.nodes[i as usize].deadline, i));
        let mut prev = NIL;
        for &idx in &order {
            list.nodes[idx as usize].prev = prev;
            match prev {
                NIL => list.head = idx,
                _ => list.nodes[prev as usize].next = idx,
            }
            prev = idx;
        }
        list.tail = prev;
        list.len = order.len();
        (list, (0..count).map(ListKey).collect())
    }

    /// `add_timer(timer)`: a new timer, linked by a walk from the head. O(n).
    pub fn insert(&mut self, deadline: u64, value: u32) -> ListKey {
        let idx = self.alloc(deadline, value);
        self.add_timer(idx);
        ListKey(idx)
    }

    /// `del_timer(timer)`: unlinks in O(1) and frees the node. The node's links are left as
    /// they were, for [`restore`](Self::restore).
    pub fn cancel(&mut self, key: ListKey) -> u32 {
        let idx = key.0;
        assert!(self.nodes[idx as usize].live, "ListKey({idx}) is not a live timer");
        self.unlink(idx);
        let node = &mut self.nodes[idx as usize];
        node.live = false;
        let value = std::mem::replace(&mut node.value, self.free);
        self.free = idx;
        self.len -= 1;
        value
    }

    /// A new deadline for a live timer. Later: `adjust_timer` (nothing to do while the next
    /// timer is still later; otherwise unlink and walk on from the old position). Earlier (the
    /// original cannot): unlink and `add_timer` from the head.
    pub fn reset(&mut self, key: ListKey, deadline: u64) {
        let idx = key.0;
        assert!(self.nodes[idx as usize].live, "ListKey({idx}) is not a live timer");
        let old = std::mem::replace(&mut self.nodes[idx as usize].deadline, deadline);
        if deadline < old {
            self.unlink(idx);
            self.add_timer(idx);
            return;
        }
        // adjust_timer
        let next = self.nodes[idx as usize].next;
        if next == NIL || deadline < self.nodes[next as usize].deadline {
            return;
        }
        self.unlink(idx);
        self.add_after(idx, next);
    }

    /// `tick()`: pops the timers due at `now` from the head into `out`.
    pub fn tick(&mut self, now: u64, out: &mut Vec<u32>) {
        while self.head != NIL && self.nodes[self.head as usize].deadline <= now {
            let idx = self.head;
            out.push(self.cancel(ListKey(idx)));
        }
    }

    /// The head's deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        (self.head != NIL).then(|| self.nodes[self.head as usize].deadline)
    }

    /// Bench bookkeeping only: a new timer linked by a walk back from the tail, O(1) for a
    /// deadline at or after every other (a connection arriving now, replacing one that fired).
    pub fn append(&mut self, deadline: u64, value: u32) -> ListKey {
        let idx = self.alloc(deadline, value);
        let mut prev = self.tail;
        while prev != NIL && self.nodes[prev as usize].deadline > deadline {
            prev = self.nodes[prev as usize].prev;
        }
        let next = match prev {
            NIL => self.head,
            _ => self.nodes[prev as usize].next,
        };
        self.link(idx, prev, next);
        ListKey(idx)
    }

    /// Bench bookkeeping only: undoes a [`cancel`](Self::cancel) in O(1), relinking the node
    /// between the neighbours it still names (Knuth's dancing links). Valid only for the
    /// timers cancelled last, restored in reverse order with nothing in between; it puts back
    /// the exact list the cancels started from.
    pub fn restore(&mut self, key: ListKey, deadline: u64, value: u32) -> ListKey {
        let idx = key.0;
        assert_eq!(self.free, idx, "restore must undo the last cancel");
        let node = &mut self.nodes[idx as usize];
        debug_assert_eq!(node.deadline, deadline);
        self.free = std::mem::replace(&mut node.value, value);
        node.live = true;
        let (prev, next) = (node.prev, node.next);
        self.link(idx, prev, next);
        self.len += 1;
        key
    }

    /// Takes a vacant node (or a new one) for a timer, not yet linked.
    fn alloc(&mut self, deadline: u64, value: u32) -> u32 {
        self.len += 1;
        let node = Node { deadline, prev: NIL, next: NIL, value, live: true };
        if self.free == NIL {
            let idx = u32::try_from(self.nodes.len()).ok().filter(|&i| i != NIL).expect("list full");
            self.nodes.push(node);
            idx
        } else {
            let idx = self.free;
            let free = std::mem::replace(&mut self.nodes[idx as usize], node).value;
            self.free = free;
            idx
        }
    }

    /// `add_timer(timer)`: at the head if earlier than the head, else walk from the head.
    fn add_timer(&mut self, idx: u32) {
        let head = self.head;
        if head == NIL {
            self.link(idx, NIL, NIL);
        } else if self.nodes[idx as usize].deadline < self.nodes[head as usize].deadline {
            self.link(idx, NIL, head);
        } else {
            self.add_after(idx, head);
        }
    }

    /// `add_timer(timer, lst_head)`: links `idx` after `start` (whose deadline is not later),
    /// before the first node with a later deadline, walking forward; at the tail if none.
    fn add_after(&mut self, idx: u32, start: u32) {
        let deadline = self.nodes[idx as usize].deadline;
        let mut prev = start;
        let mut next = self.nodes[prev as usize].next;
        while next != NIL && deadline >= self.nodes[next as usize].deadline {
            prev = next;
            next = self.nodes[next as usize].next;
        }
        self.link(idx, prev, next);
    }

    /// Links `idx` between `prev` and `next` (adjacent, or `NIL` at the ends).
    fn link(&mut self, idx: u32, prev: u32, next: u32) {
        let node = &mut self.nodes[idx as usize];
        node.prev = prev;
        node.next = next;
        match prev {
            NIL => self.head = idx,
            _ => self.nodes[prev as usize].next = idx,
        }
        match next {
            NIL => self.tail = idx,
            _ => self.nodes[next as usize].prev = idx,
        }
    }

    /// Takes `idx` off the list; its own links are left as they were.
    fn unlink(&mut self, idx: u32) {
        let Node { prev, next, .. } = self.nodes[idx as usize];
        match prev {
            NIL => self.head = next,
            _ => self.nodes[prev as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            _ => self.nodes[next as usize].prev = prev,
        }
    }
}
