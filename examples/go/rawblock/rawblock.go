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

// Options for Open; zero values mean the library's defaults.
type Options struct {
	Create, Overwrite, ReadOnly bool
	CapacityBytes, SlotBytes    uint64
	Engine, QueueDepth          uint32
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
