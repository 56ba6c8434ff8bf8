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

// Report is what Recover did.
type Report struct {
	Indexed, DroppedStale, DroppedUnreadable, CheckpointSequence, HeaderReads uint64
	Engine                                                                    uint32
}

// Recover rebuilds the index (checkpoint and header validation, or a scan).
func (d *Device) Recover() (Report, error) {
	var r C.rb_recover_report
	r.struct_size = C.size_t(unsafe.Sizeof(r))
	if err := check(C.rb_recover(d.dev, nil, &r)); err != nil {
		return Report{}, err
	}
	return Report{uint64(r.indexed), uint64(r.dropped_stale), uint64(r.dropped_unreadable),
		uint64(r.checkpoint_sequence), uint64(r.header_reads), uint32(r.engine)}, nil
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
