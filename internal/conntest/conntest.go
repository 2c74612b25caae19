package conntest

import (
	"bytes"
	"io"
	"net"
	"strings"
	"time"
)

// Conn is an in-memory connection: reads come from In, writes go to Out.
// Close and the deadlines do nothing.
type Conn struct {
	In  io.Reader
	Out bytes.Buffer
}

// New returns a Conn that reads in.
func New(in string) *Conn { return &Conn{In: strings.NewReader(in)} }

func (c *Conn) Read(p []byte) (int, error)         { return c.In.Read(p) }
func (c *Conn) Write(p []byte) (int, error)        { return c.Out.Write(p) }
func (c *Conn) Close() error                       { return nil }
func (c *Conn) LocalAddr() net.Addr                { return &net.UnixAddr{Name: "local", Net: "unix"} }
func (c *Conn) RemoteAddr() net.Addr               { return &net.UnixAddr{Name: "remote", Net: "unix"} }
func (c *Conn) SetDeadline(t time.Time) error      { return nil }
func (c *Conn) SetReadDeadline(t time.Time) error  { return nil }
func (c *Conn) SetWriteDeadline(t time.Time) error { return nil }
