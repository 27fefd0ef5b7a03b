package sshx

import (
	"context"
	"sync"
)

// Limiter bounds concurrent SSH sessions per host (queen.toml
// ssh.max_sessions_per_host), so a burst of operations does not trip sshd's
// MaxSessions/MaxStartups and fail spuriously. The zero value is not usable;
// call NewLimiter.
type Limiter struct {
	max   int
	mu    sync.Mutex
	slots map[string]chan struct{}
}

// NewLimiter allows maxPerHost concurrent holders per host (at least 1).
func NewLimiter(maxPerHost int) *Limiter {
	if maxPerHost < 1 {
		maxPerHost = 1
	}
	return &Limiter{max: maxPerHost, slots: map[string]chan struct{}{}}
}

// Acquire waits for a free slot for host or for ctx to end. The returned
// release must be called once the session is done; extra calls do nothing.
func (l *Limiter) Acquire(ctx context.Context, host string) (release func(), err error) {
	l.mu.Lock()
	ch, ok := l.slots[host]
	if !ok {
		ch = make(chan struct{}, l.max)
		l.slots[host] = ch
	}
	l.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case ch <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() { once.Do(func() { <-ch }) }, nil
}

// InUse reports how many slots of host are held (for status pages and tests).
func (l *Limiter) InUse(host string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.slots[host])
}
