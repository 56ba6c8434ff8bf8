// Package rawblock wraps the rawblock C library with cgo.
//
// A Device may be used from several goroutines at once; Close it once, after
// every other call on it has returned.
package rawblock

/*
#cgo CFLAGS: -I${SRCDIR}/../../../include
#cgo LDFLAGS: -L${SRCDIR}/../../../target/release -lrawblock
#include <stdlib.h>
#include "rawblock.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Error is a failed call: the rb_status and the library's message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("rawblock: %s (status %d)", e.Message, e.Status) }

const (
	StatusNotFound = int(C.RB_E_NOT_FOUND)
	StatusTooSmall = int(C.RB_E_BUFFER_TOO_SMALL)
)

func check(s C.rb_status) error {
	if s == C.RB_OK {
		return nil
	}
	return &Error{Status: int(s), Message: C.GoString(C.rb_last_error_message())}
}

// Options for Open; zero values mean the library's defaults. CreateIfEmpty opens a
// rawblock device or formats one holding none (never over data).
type Options struct {
	Create, Overwrite, ReadOnly, CreateIfEmpty bool
	CapacityBytes, SlotBytes                   uint64
	Engine, QueueDepth                         uint32
}

// Device is an open rawblock device.
type Device struct{ dev *C.rb_device }

// Open opens (or with Create, formats) the device at path.
func Open(path string, o Options) (*Device, error) {
	var opts C.rb_options
	C.rb_options_init(&opts)
	if o.Create {
		opts.flags |= C.RB_OPEN_CREATE
	}
	if o.Overwrite {
		opts.flags |= C.RB_OPEN_OVERWRITE_OK
	}
	if o.ReadOnly {
		opts.flags |= C.RB_OPEN_READ_ONLY
	}
	if o.CreateIfEmpty {
		opts.flags |= C.RB_OPEN_CREATE_IF_EMPTY
	}
	opts.capacity_bytes = C.uint64_t(o.CapacityBytes)
	opts.slot_bytes = C.uint64_t(o.SlotBytes)
	opts.engine = C.uint32_t(o.Engine)
	if o.QueueDepth != 0 {
		opts.queue_depth = C.uint32_t(o.QueueDepth)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var dev *C.rb_device
	if err := check(C.rb_open(cpath, &opts, &dev)); err != nil {
		return nil, err
	}
	return &Device{dev}, nil
}

// Close closes the handle; it does not checkpoint.
func (d *Device) Close() error {
	err := check(C.rb_close(d.dev))
	d.dev = nil
	return err
}

func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// Put stores value under key, replacing any previous value.
func (d *Device) Put(key, value []byte) error {
	return check(C.rb_put(d.dev, ptr(key), C.size_t(len(key)), ptr(value), C.size_t(len(value))))
}

// Get returns the verified value of key.
func (d *Device) Get(key []byte) ([]byte, error) {
	buf := make([]byte, 4096)
	var n C.size_t
	s := C.rb_get(d.dev, ptr(key), C.size_t(len(key)), ptr(buf), C.size_t(len(buf)), &n)
	if s == C.RB_E_BUFFER_TOO_SMALL {
		buf = make([]byte, int(n))
		s = C.rb_get(d.dev, ptr(key), C.size_t(len(key)), ptr(buf), C.size_t(len(buf)), &n)
	}
	if err := check(s); err != nil {
		return nil, err
	}
	return buf[:int(n)], nil
}

// Delete removes key.
func (d *Device) Delete(key []byte) error {
	return check(C.rb_delete(d.dev, ptr(key), C.size_t(len(key))))
}

// Checkpoint makes the index durable.
func (d *Device) Checkpoint() error { return check(C.rb_checkpoint(d.dev)) }

// Sync makes every put and delete acknowledged before it survive a power cut.
func (d *Device) Sync() error { return check(C.rb_sync(d.dev)) }

// SetAutoCheckpoint makes the handle checkpoint by itself after everyChanges changes or
// everyMs milliseconds with changes pending (0 turns a trigger off).
func (d *Device) SetAutoCheckpoint(everyChanges, everyMs uint64) error {
	return check(C.rb_set_auto_checkpoint(d.dev, C.uint64_t(everyChanges), C.uint64_t(everyMs)))
}

// VerifyProgress is where background verification stands (VerifyStep).
type VerifyProgress struct {
	Checked, Verified, Dropped, Unreadable, Remaining uint64
}

// VerifyStep verifies up to max entries a fast recovery indexed unread.
func (d *Device) VerifyStep(max int) (VerifyProgress, error) {
	var p C.rb_verify_progress
	p.struct_size = C.size_t(unsafe.Sizeof(p))
	if err := check(C.rb_verify_step(d.dev, C.size_t(max), &p)); err != nil {
		return VerifyProgress{}, err
	}
	return VerifyProgress{uint64(p.checked), uint64(p.verified), uint64(p.dropped), uint64(p.unreadable), uint64(p.remaining)}, nil
}

// Report is what Recover did.
type Report struct {
	Indexed, DroppedStale, DroppedUnreadable, CheckpointSequence, HeaderReads uint64
	Engine                                                                    uint32
}

// Recover rebuilds the index with RB_RECOVER_AUTO (fast recovery: the checkpoint and the
// slots leased since it; or full validation, or a scan).
func (d *Device) Recover() (Report, error) {
	var r C.rb_recover_report
	r.struct_size = C.size_t(unsafe.Sizeof(r))
	if err := check(C.rb_recover(d.dev, nil, &r)); err != nil {
		return Report{}, err
	}
	return Report{uint64(r.indexed), uint64(r.dropped_stale), uint64(r.dropped_unreadable),
		uint64(r.checkpoint_sequence), uint64(r.header_reads), uint32(r.engine)}, nil
}

// cItems holds an rb_item array and copies of its keys and values in C memory: cgo forbids
// handing C a Go pointer to memory that itself holds Go pointers, so batches copy (Go 1.21's
// runtime.Pinner would allow pointing into Go memory directly).
type cItems struct {
	items []C.rb_item
	base  *C.rb_item
	bufs  []unsafe.Pointer
}

func newItems(keys [][]byte) *cItems {
	n := len(keys)
	if n == 0 {
		return &cItems{}
	}
	base := (*C.rb_item)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof(C.rb_item{}))))
	c := &cItems{items: unsafe.Slice(base, n), base: base}
	for i, k := range keys {
		c.items[i].struct_size = C.size_t(unsafe.Sizeof(C.rb_item{}))
		c.items[i].key = c.copy(k)
		c.items[i].key_len = C.size_t(len(k))
	}
	return c
}

func (c *cItems) copy(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	p := C.CBytes(b)
	c.bufs = append(c.bufs, p)
	return p
}

func (c *cItems) alloc(n int) unsafe.Pointer {
	p := C.malloc(C.size_t(n + 1))
	c.bufs = append(c.bufs, p)
	return p
}

func (c *cItems) free() {
	for _, p := range c.bufs {
		C.free(p)
	}
	if c.base != nil {
		C.free(unsafe.Pointer(c.base))
	}
}

// errs is each item's outcome; an item's message is its status's description (the
// thread's last-error message belongs to the call, not to one item).
func (c *cItems) errs() []error {
	out := make([]error, len(c.items))
	for i := range c.items {
		if s := c.items[i].status; s != C.RB_OK {
			out[i] = &Error{Status: int(s), Message: C.GoString(C.rb_status_str(s))}
		}
	}
	return out
}

// PutMany stores every (keys[i], values[i]) in one call; errs[i] is item i's outcome (nil when stored).
func (d *Device) PutMany(keys, values [][]byte) ([]error, error) {
	if len(keys) != len(values) {
		return nil, fmt.Errorf("rawblock: %d keys but %d values", len(keys), len(values))
	}
	c := newItems(keys)
	defer c.free()
	for i, v := range values {
		c.items[i].value = c.copy(v)
		c.items[i].value_len = C.size_t(len(v))
	}
	if err := check(C.rb_put_many(d.dev, c.base, C.size_t(len(keys)))); err != nil {
		return nil, err
	}
	return c.errs(), nil
}

// GetMany returns every key's verified value in one call; values[i] is nil when errs[i] is not.
func (d *Device) GetMany(keys [][]byte) ([][]byte, []error, error) {
	c := newItems(keys)
	defer c.free()
	// The first call reads nothing: every present key answers with its length.
	if err := check(C.rb_get_many(d.dev, c.base, C.size_t(len(keys)))); err != nil {
		return nil, nil, err
	}
	for i := range c.items {
		n := int(c.items[i].len)
		c.items[i].value = c.alloc(n)
		c.items[i].value_len = C.size_t(n)
	}
	if err := check(C.rb_get_many(d.dev, c.base, C.size_t(len(keys)))); err != nil {
		return nil, nil, err
	}
	values := make([][]byte, len(keys))
	errs := c.errs()
	for i := range c.items {
		if errs[i] == nil {
			values[i] = C.GoBytes(c.items[i].value, C.int(c.items[i].len))
		}
	}
	return values, errs, nil
}

// DeleteMany deletes every key in one call; errs[i] is item i's outcome.
func (d *Device) DeleteMany(keys [][]byte) ([]error, error) {
	c := newItems(keys)
	defer c.free()
	if err := check(C.rb_delete_many(d.dev, c.base, C.size_t(len(keys)))); err != nil {
		return nil, err
	}
	return c.errs(), nil
}

// CountPresentPrefix is how many of keys, in order, are present before the first absent one.
func (d *Device) CountPresentPrefix(keys [][]byte) (int, error) {
	c := newItems(keys)
	defer c.free()
	var n C.size_t
	if err := check(C.rb_count_present_prefix(d.dev, c.base, C.size_t(len(keys)), &n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

func (d *Device) info() (C.rb_device_info, error) {
	var i C.rb_device_info
	i.struct_size = C.size_t(unsafe.Sizeof(i))
	return i, check(C.rb_get_info(d.dev, &i))
}

// Formatted says whether this handle formatted the device when it opened.
func (d *Device) Formatted() (bool, error) {
	i, err := d.info()
	return i.formatted != 0, err
}

// KeyInfo is one indexed key.
type KeyInfo struct {
	Key                  []byte
	ValueLen, Generation uint64
}

// ListKeys calls fn for every indexed key after `after` (nil: from the first) in bytewise
// order, fetching pageKeys at a time, until fn returns an error (which ListKeys returns).
// Under concurrent writes a key indexed throughout comes exactly once and none comes twice.
func (d *Device) ListKeys(after []byte, pageKeys int, fn func(KeyInfo) error) error {
	if pageKeys < 1 {
		pageKeys = 4096
	}
	i, err := d.info()
	if err != nil {
		return err
	}
	var cur *C.rb_key_cursor
	if err := check(C.rb_key_cursor_new(ptr(after), C.size_t(len(after)), &cur)); err != nil {
		return err
	}
	defer C.rb_key_cursor_free(cur)
	// C memory: cgo forbids handing C Go memory that holds Go pointers, and keeps this simple.
	out := (*C.rb_key_info)(C.calloc(C.size_t(pageKeys), C.size_t(unsafe.Sizeof(C.rb_key_info{}))))
	keysCap := C.size_t(i.max_key_bytes) + 256<<10
	keys := C.malloc(keysCap)
	defer C.free(unsafe.Pointer(out))
	defer C.free(keys)
	entries := unsafe.Slice(out, pageKeys)
	entries[0].struct_size = C.size_t(unsafe.Sizeof(entries[0]))
	for {
		var n C.size_t
		if err := check(C.rb_list_keys(d.dev, cur, out, C.size_t(pageKeys), keys, keysCap, &n)); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		for _, e := range entries[:n] {
			k := C.GoBytes(unsafe.Add(keys, e.key_offset), C.int(e.key_len))
			if err := fn(KeyInfo{k, uint64(e.value_len), uint64(e.generation)}); err != nil {
				return err
			}
		}
	}
}

// Latency percentiles in nanoseconds (each at most 1/64 above the true value).
type Latency struct{ Count, P50, P99, P999, Max uint64 }

// Metrics are a handle's data-path counters since open or ResetMetrics.
type Metrics struct {
	Gets, Hits, Misses, Puts, Deletes, Evictions, BytesRead, BytesWritten, Corrupt, IOErrors uint64
	Get, Put, GetMany, PutMany                                                               Latency
}

func latency(l C.rb_latency) Latency {
	return Latency{uint64(l.count), uint64(l.p50_ns), uint64(l.p99_ns), uint64(l.p999_ns), uint64(l.max_ns)}
}

// Metrics reads the handle's counters and latency percentiles.
func (d *Device) Metrics() (Metrics, error) {
	var m C.rb_metrics
	m.struct_size = C.size_t(unsafe.Sizeof(m))
	if err := check(C.rb_get_metrics(d.dev, &m)); err != nil {
		return Metrics{}, err
	}
	return Metrics{uint64(m.gets), uint64(m.hits), uint64(m.misses), uint64(m.puts), uint64(m.deletes),
		uint64(m.evictions), uint64(m.bytes_read), uint64(m.bytes_written), uint64(m.corrupt), uint64(m.io_errors),
		latency(m.get_latency), latency(m.put_latency), latency(m.get_many_latency), latency(m.put_many_latency)}, nil
}

// ResetMetrics zeroes the handle's metrics.
func (d *Device) ResetMetrics() error { return check(C.rb_reset_metrics(d.dev)) }

// Eviction policies for SetEviction.
const (
	EvictNone = uint32(C.RB_EVICT_NONE)
	EvictLRU  = uint32(C.RB_EVICT_LRU)
	EvictFIFO = uint32(C.RB_EVICT_FIFO)
)

// SetEviction sets what a put does when no slot is free (EvictNone: RB_E_NO_SPACE).
func (d *Device) SetEviction(policy, lowWatermarkPermille uint32) error {
	return check(C.rb_set_eviction(d.dev, C.uint32_t(policy), C.uint32_t(lowWatermarkPermille)))
}

// TakeEvicted returns the keys evicted since the last call, oldest first (at most maxKeys).
func (d *Device) TakeEvicted(maxKeys int) ([][]byte, error) {
	if maxKeys <= 0 {
		return nil, nil
	}
	out := (*C.rb_key_info)(C.calloc(C.size_t(maxKeys), C.size_t(unsafe.Sizeof(C.rb_key_info{}))))
	defer C.free(unsafe.Pointer(out))
	infos := unsafe.Slice(out, maxKeys)
	infos[0].struct_size = C.size_t(unsafe.Sizeof(C.rb_key_info{}))
	const keysCap = 64 * 1024
	keys := C.malloc(keysCap)
	defer C.free(keys)
	var n C.size_t
	if err := check(C.rb_take_evicted(d.dev, out, C.size_t(maxKeys), keys, keysCap, &n)); err != nil {
		return nil, err
	}
	got := make([][]byte, int(n))
	for i := range got {
		got[i] = C.GoBytes(unsafe.Add(keys, int(infos[i].key_offset)), C.int(infos[i].key_len))
	}
	return got, nil
}
