package e2e

import (
	"net/http"
	"sync"
)

// load sends GETs to one URL from a few clients, one after another each,
// until stopped, and counts every request that did not answer 200.
type load struct {
	mu       sync.Mutex
	n        int
	failures []string
	stop     chan struct{}
	wg       sync.WaitGroup
}

// startLoad starts clients goroutines fetching url with c.
func startLoad(c *http.Client, url string, clients int) *load {
	l := &load{stop: make(chan struct{})}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				l.record(fetchStatus(c, url))
			}
		}()
	}
	return l
}

// fetchStatus is "" for a 200, else what went wrong.
func fetchStatus(c *http.Client, url string) string {
	resp, err := c.Get(url)
	if err != nil {
		return err.Error()
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return resp.Status
	}
	return ""
}

func (l *load) record(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if msg != "" {
		l.failures = append(l.failures, msg)
	}
}

// finish stops the clients, waits for them, and returns how many requests
// were sent and the failures.
func (l *load) finish() (n int, failures []string) {
	close(l.stop)
	l.wg.Wait()
	return l.n, l.failures
}
