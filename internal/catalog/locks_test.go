package catalog

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// The per-model lock map holds only models in use: a thousand ids asked
// about once leave no entry, while exclusion still holds.
func TestModelLocksArePruned(t *testing.T) {
	c, err := New(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if _, _, err := c.Delete(fmt.Sprintf("org/repo-%d:model.bin", i)); err == nil {
			t.Fatalf("deleting a model that is not there succeeded")
		}
	}
	if n := c.lockCount(); n != 0 {
		t.Fatalf("%d lock entries after 1000 one-off ids; want 0", n)
	}

	unlock, err := c.lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.tryLock("k"); ok {
		t.Fatal("tryLock got a lock that is held")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.lock(ctx, "k"); err == nil {
		t.Fatal("lock got a lock that is held")
	}
	if n := c.lockCount(); n != 1 {
		t.Fatalf("%d lock entries while one is held; want 1", n)
	}
	waited := make(chan func(), 1)
	go func() {
		u, err := c.lock(context.Background(), "k")
		if err != nil {
			t.Error(err)
		}
		waited <- u
	}()
	unlock()
	u := <-waited // the waiter gets the lock once it is released
	if _, ok := c.tryLock("k"); ok {
		t.Fatal("tryLock got the lock the waiter holds")
	}
	u()
	if n := c.lockCount(); n != 0 {
		t.Fatalf("%d lock entries after every holder let go; want 0", n)
	}
}
