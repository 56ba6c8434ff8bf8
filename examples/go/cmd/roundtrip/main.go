// Formats, puts, checkpoints, closes, reopens, recovers and verifies every value; lists the
// keys to rebuild an index, and reads the metrics.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"rawblock.example/go/rawblock"
)

func value(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, i*37%5000) }

func run(path string) error {
	const n = 100
	os.Remove(path)
	// The first start: open-or-create formats, and Recover answers an empty report.
	dev, err := rawblock.Open(path, rawblock.Options{CreateIfEmpty: true, CapacityBytes: 64 << 20, SlotBytes: 256 << 10})
	if err != nil {
		return err
	}
	if formatted, err := dev.Formatted(); err != nil || !formatted {
		return fmt.Errorf("open-or-create did not format a missing file (%v)", err)
	}
	if r, err := dev.Recover(); err != nil || r.Indexed != 0 {
		return fmt.Errorf("recover after format: %+v, %v", r, err)
	}
	for i := 0; i < n; i++ {
		if err := dev.Put([]byte(fmt.Sprintf("go-key-%d", i)), value(i)); err != nil {
			return err
		}
	}
	if err := dev.Delete([]byte("go-key-0")); err != nil {
		return err
	}
	if err := dev.Sync(); err != nil {
		return err
	}
	if err := dev.Checkpoint(); err != nil {
		return err
	}
	if err := dev.Close(); err != nil {
		return err
	}
	dev, err = rawblock.Open(path, rawblock.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer dev.Close()
	r, err := dev.Recover()
	if err != nil {
		return err
	}
	if r.Indexed != n-1 || r.DroppedStale != 0 {
		return fmt.Errorf("recovered %d entries (%d stale), want %d", r.Indexed, r.DroppedStale, n-1)
	}
	// Fast recovery indexed the checkpoint's entries unread; verify them all now.
	if v, err := dev.VerifyStep(1000); err != nil || v.Verified != uint64(n-1) || v.Dropped != 0 || v.Remaining != 0 {
		return fmt.Errorf("verification: %+v, %v", v, err)
	}
	var listed [][]byte
	err = dev.ListKeys(nil, 16, func(k rawblock.KeyInfo) error {
		if len(listed) > 0 && bytes.Compare(listed[len(listed)-1], k.Key) >= 0 {
			return fmt.Errorf("keys out of order: %q then %q", listed[len(listed)-1], k.Key)
		}
		listed = append(listed, k.Key)
		return nil
	})
	if err != nil {
		return err
	}
	if len(listed) != n-1 {
		return fmt.Errorf("listed %d keys, want %d", len(listed), n-1)
	}
	for i := 1; i < n; i++ {
		got, err := dev.Get([]byte(fmt.Sprintf("go-key-%d", i)))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, value(i)) {
			return fmt.Errorf("go-key-%d: wrong value", i)
		}
	}
	var rbErr *rawblock.Error
	if _, err := dev.Get([]byte("go-key-0")); !errors.As(err, &rbErr) || rbErr.Status != rawblock.StatusNotFound {
		return fmt.Errorf("a deleted key: got %v, want not found", err)
	}
	m, err := dev.Metrics()
	if err != nil {
		return err
	}
	if m.Hits != n-1 || m.Misses != 1 || m.Get.Count != n {
		return fmt.Errorf("metrics: %+v", m)
	}
	if err := batches(dev, path+".batch"); err != nil {
		return err
	}
	fmt.Printf("Go round trip: %d entries recovered from checkpoint %d, listed and verified; get p50 %d ns, p99 %d ns; batched calls verified\n",
		r.Indexed, r.CheckpointSequence, m.Get.P50, m.Get.P99)
	return nil
}

// batches checks PutMany, GetMany, CountPresentPrefix and DeleteMany on a fresh device.
func batches(_ *rawblock.Device, path string) error {
	dev, err := rawblock.Open(path, rawblock.Options{Create: true, Overwrite: true, CapacityBytes: 64 << 20, SlotBytes: 256 << 10})
	if err != nil {
		return err
	}
	defer os.Remove(path)
	defer dev.Close()
	var keys, values [][]byte
	for i := 0; i < 10; i++ {
		keys = append(keys, []byte(fmt.Sprintf("go-batch-%d", i)))
		values = append(values, value(i+1))
	}
	errs, err := dev.PutMany(keys, values)
	if err != nil {
		return err
	}
	for i, e := range errs {
		if e != nil {
			return fmt.Errorf("PutMany item %d: %v", i, e)
		}
	}
	got, errs, err := dev.GetMany(append(keys, []byte("absent")))
	if err != nil {
		return err
	}
	for i := range keys {
		if errs[i] != nil || !bytes.Equal(got[i], values[i]) {
			return fmt.Errorf("GetMany item %d: %v", i, errs[i])
		}
	}
	var rbErr *rawblock.Error
	if !errors.As(errs[len(keys)], &rbErr) || rbErr.Status != rawblock.StatusNotFound {
		return fmt.Errorf("GetMany of an absent key: %v, want not found", errs[len(keys)])
	}
	if n, err := dev.CountPresentPrefix([][]byte{keys[0], keys[1], []byte("absent"), keys[2]}); err != nil || n != 2 {
		return fmt.Errorf("CountPresentPrefix = %d, %v; want 2", n, err)
	}
	errs, err = dev.DeleteMany([][]byte{keys[0], keys[0]})
	if err != nil || errs[0] != nil || !errors.As(errs[1], &rbErr) || rbErr.Status != rawblock.StatusNotFound {
		return fmt.Errorf("DeleteMany of a key twice: %v %v, want nil then not found", errs, err)
	}
	// Eviction on a full device: the least recently used key goes and is reported.
	if err := dev.SetEviction(rawblock.EvictLRU, 0); err != nil {
		return err
	}
	evicted := 0
	for i := 0; i < 100000 && evicted == 0; i++ {
		if err := dev.Put([]byte(fmt.Sprintf("fill-%d", i)), []byte("v")); err != nil {
			return err
		}
		gone, err := dev.TakeEvicted(16)
		if err != nil {
			return err
		}
		evicted = len(gone)
	}
	if evicted == 0 {
		return fmt.Errorf("filling the device evicted nothing")
	}
	return nil
}

func main() {
	path := "target/examples-go.img"
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	if err := run(path); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Remove(path)
}
