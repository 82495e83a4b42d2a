// One nats.go baseline run: the reference client on the bench's server.
//
// `python -m bench` builds this file once (bench/natsgo.py: GO111MODULE=off, the
// nats.go source tree of Debian's golang-github-nats-io-go-nats-dev on GOPATH) and
// starts it once per run with the run's spec as JSON on stdin, as it does
// bench/peer_runner.py for the Python peers (the same spec and the same result line):
//
//	{"scenario": "pubsub" | "publish" | "consume", "connect": {"servers": [...],
//	 "user": ..., "password": ...} | {"servers": [...], "token": ...}, "subject": ...,
//	 "stream": ..., "durable": ..., "n": ..., "m": ..., "window": 256,
//	 "concurrency": 1, "max_ack_pending": ..., "payload": "...", "idle": 1.0,
//	 "limit": 600.0, "fetch": 256}
//
// It prints one JSON line: {"values": {...}, "sent": n, "received": k, "notes": [...]}.
// The handler only counts, as everywhere in the bench. `runner --versions` prints the
// nats.go and Go versions. Every wait is bounded (idle without progress, limit overall).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

type connectInfo struct {
	Servers  []string `json:"servers"`
	User     string   `json:"user"`
	Password string   `json:"password"`
	Token    string   `json:"token"`
}

type spec struct {
	Scenario      string      `json:"scenario"`
	Connect       connectInfo `json:"connect"`
	Subject       string      `json:"subject"`
	Stream        string      `json:"stream"`
	Durable       string      `json:"durable"`
	N             int         `json:"n"`
	M             int         `json:"m"`
	Window        int         `json:"window"`
	Concurrency   int         `json:"concurrency"`
	MaxAckPending int         `json:"max_ack_pending"`
	Payload       string      `json:"payload"`
	Idle          float64     `json:"idle"`
	Limit         float64     `json:"limit"`
	Fetch         int         `json:"fetch"`
}

type result struct {
	Values   map[string]float64 `json:"values"`
	Sent     int                `json:"sent,omitempty"`
	Received int64              `json:"received,omitempty"`
	Notes    []string           `json:"notes"`
}

// counter counts handled messages and remembers when the last one came.
type counter struct {
	target int64
	n      atomic.Int64
	last   atomic.Int64 // nanoseconds since start
	start  time.Time
	done   chan struct{}
	once   sync.Once
}

func newCounter(target int) *counter {
	return &counter{target: int64(target), start: time.Now(), done: make(chan struct{})}
}

func (c *counter) hit() {
	c.last.Store(int64(time.Since(c.start)))
	if c.n.Add(1) >= c.target {
		c.once.Do(func() { close(c.done) })
	}
}

// wait for the target; false after idle seconds without progress or limit seconds in all.
func (c *counter) wait(idle, limit float64) bool {
	deadline := time.After(time.Duration(limit * float64(time.Second)))
	seen := int64(-1)
	for {
		select {
		case <-c.done:
			return true
		case <-deadline:
			return false
		case <-time.After(time.Duration(idle * float64(time.Second))):
			now := c.n.Load()
			if now == seen {
				return false
			}
			seen = now
		}
	}
}

// throughput from started (an offset from c.start) to the last message.
func (c *counter) throughput(started time.Duration, expected int, r *result) error {
	got := c.n.Load()
	if got == 0 {
		return errors.New("no message was received")
	}
	if got < int64(expected) {
		r.Notes = append(r.Notes, fmt.Sprintf("received %d of %d", got, expected))
	}
	elapsed := time.Duration(c.last.Load()) - started
	r.Values["throughput"] = float64(got) / elapsed.Seconds()
	r.Received = got
	return nil
}

func connect(s *spec) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("jetkit-bench-nats.go"), nats.MaxReconnects(1)}
	if s.Connect.User != "" {
		opts = append(opts, nats.UserInfo(s.Connect.User, s.Connect.Password))
	}
	if s.Connect.Token != "" {
		opts = append(opts, nats.Token(s.Connect.Token))
	}
	return nats.Connect(strings.Join(s.Connect.Servers, ","), opts...)
}

func percentile(values []float64, q float64) float64 {
	if len(values) == 0 {
		return math.NaN()
	}
	sorted := append([]float64(nil), values...)
	sort.Float64s(sorted)
	i := int(math.Ceil(q/100*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

// pubsub: 1 pub -> 1 sub on one connection, an asynchronous subscription (a callback).
func pubsub(nc *nats.Conn, s *spec, r *result) error {
	payload := []byte(s.Payload)
	c := newCounter(s.N)
	sub, err := nc.Subscribe(s.Subject, func(m *nats.Msg) { c.hit() })
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	// the same room for a burst as the Python clients get (nats.go's default is 512k
	// messages, 64 MiB: a subscriber that falls behind drops, which the table shows)
	if err := nc.Flush(); err != nil {
		return err
	}
	started := time.Since(c.start)
	for i := 0; i < s.N; i++ {
		if err := nc.Publish(s.Subject, payload); err != nil {
			return err
		}
	}
	if err := nc.Flush(); err != nil {
		return err
	}
	c.wait(s.Idle, s.Limit)
	if dropped, err := sub.Dropped(); err == nil && dropped > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("the client dropped %d (slow consumer)", dropped))
	}
	r.Sent = s.N
	return c.throughput(started, s.N, r)
}

// publish: PublishAsync with at most window acks outstanding, every ack checked; then a
// goroutine per publish (js.Publish) in a window; then one at a time (latency).
func publish(nc *nats.Conn, s *spec, r *result) error {
	payload := []byte(s.Payload)
	limit := time.Duration(s.Limit * float64(time.Second))
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(s.Window), nats.MaxWait(limit))
	if err != nil {
		return err
	}
	if _, err := js.Publish(s.Subject, payload); err != nil {
		return err
	}
	started := time.Now()
	futures := make([]nats.PubAckFuture, 0, s.N)
	for i := 0; i < s.N; i++ {
		f, err := js.PublishAsync(s.Subject, payload)
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	bad := 0
	for _, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Sequence == 0 {
				bad++
			}
		case <-f.Err():
			bad++
		case <-time.After(limit):
			return errors.New("a PubAck did not come in time")
		}
	}
	pipelined := float64(s.N) / time.Since(started).Seconds()
	if bad > 0 {
		return fmt.Errorf("%d of %d publishes failed or had bad acks", bad, s.N)
	}

	started = time.Now()
	slots := make(chan struct{}, s.Window)
	var failed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < s.N; i++ {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			ack, err := js.Publish(s.Subject, payload)
			if err != nil || ack.Sequence == 0 {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	tasks := float64(s.N) / time.Since(started).Seconds()
	if failed.Load() > 0 {
		return fmt.Errorf("%d of %d publishes failed or had bad acks", failed.Load(), s.N)
	}

	lat := make([]float64, 0, s.M)
	for i := 0; i < s.M; i++ {
		t := time.Now()
		if _, err := js.Publish(s.Subject, payload); err != nil {
			return err
		}
		lat = append(lat, float64(time.Since(t).Nanoseconds())/1e3)
	}
	r.Values["throughput"] = pipelined
	r.Values["tasks"] = tasks
	r.Values["p50"] = percentile(lat, 50)
	r.Values["p99"] = percentile(lat, 99)
	return nil
}

// consume: a durable pull consumer (explicit ack) read with Fetch(batch) and msg.Ack()
// per message; concurrency N: N goroutines, each with its own pull subscription bound
// to the one durable (as the bench's nats-py row does).
func consume(nc *nats.Conn, s *spec, r *result, c *counter) error {
	js, err := nc.JetStream()
	if err != nil {
		return err
	}
	_, err = js.AddConsumer(s.Stream, &nats.ConsumerConfig{
		Durable:       s.Durable,
		DeliverPolicy: nats.DeliverAllPolicy,
		AckPolicy:     nats.AckExplicitPolicy,
		MaxAckPending: s.MaxAckPending,
	})
	if err != nil {
		return err
	}
	defer js.DeleteConsumer(s.Stream, s.Durable)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for w := 0; w < s.Concurrency; w++ {
		sub, err := js.PullSubscribe(s.Subject, s.Durable, nats.Bind(s.Stream, s.Durable))
		if err != nil {
			close(stop)
			wg.Wait()
			return err
		}
		wg.Add(1)
		go func(sub *nats.Subscription) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				msgs, err := sub.Fetch(s.Fetch, nats.MaxWait(time.Second))
				if err != nil && !errors.Is(err, nats.ErrTimeout) {
					firstErr.CompareAndSwap(nil, err.Error())
				}
				for _, m := range msgs {
					c.hit()
					if err := m.Ack(); err != nil {
						firstErr.CompareAndSwap(nil, err.Error())
					}
				}
			}
		}(sub)
	}
	c.wait(s.Idle, s.Limit)
	close(stop)
	wg.Wait()
	if text, ok := firstErr.Load().(string); ok {
		r.Notes = append(r.Notes, "a reader failed: "+text)
	}
	r.Sent = s.N
	return c.throughput(0, s.N, r)
}

func run(s *spec) (*result, error) {
	r := &result{Values: map[string]float64{}, Notes: []string{}}
	// as the bench: for consume, connecting is part of the run
	c := newCounter(s.N)
	nc, err := connect(s)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	switch s.Scenario {
	case "pubsub":
		err = pubsub(nc, s, r)
	case "publish":
		err = publish(nc, s, r)
	case "consume":
		err = consume(nc, s, r, c)
	default:
		err = fmt.Errorf("unknown scenario %q", s.Scenario)
	}
	return r, err
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--versions" {
		out, _ := json.Marshal(map[string]string{"nats.go": nats.Version, "go": runtime.Version()})
		fmt.Println(string(out))
		return
	}
	var s spec
	if err := json.NewDecoder(os.Stdin).Decode(&s); err != nil {
		fmt.Fprintln(os.Stderr, "bad spec:", err)
		os.Exit(2)
	}
	if s.Concurrency < 1 {
		s.Concurrency = 1
	}
	if s.Fetch < 1 {
		s.Fetch = 256
	}
	r, err := run(&s)
	if err != nil {
		fmt.Fprintln(os.Stderr, "run failed:", err)
		os.Exit(1)
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}
