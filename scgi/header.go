package scgi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// maxLengthDigits bounds the netstring length prefix (9999999 > any sane cap).
const maxLengthDigits = 7

// errBadParams marks a header whose netstring framing was intact but whose
// content breaks the SCGI rules; it earns a 400 instead of a silent close.
var errBadParams = errors.New("invalid SCGI header")

// readHeader reads the netstring header "LEN:name\0value\0...," from br and
// returns its variables. The block is read as it arrives, never allocated
// from the announced length, and is limited to max bytes.
func readHeader(br *bufio.Reader, max int) (map[string]string, error) {
	n, err := readLength(br, max)
	if err != nil {
		return nil, err
	}
	var block bytes.Buffer
	if m, err := block.ReadFrom(io.LimitReader(br, int64(n))); err != nil {
		return nil, fmt.Errorf("read header block: %w", err)
	} else if m < int64(n) {
		return nil, fmt.Errorf("header block: %w", io.ErrUnexpectedEOF)
	}
	if b, err := br.ReadByte(); err != nil {
		return nil, fmt.Errorf("header terminator: %w", noEOF(err))
	} else if b != ',' {
		return nil, fmt.Errorf("header terminator is %q, want ','", b)
	}
	return parseParams(block.Bytes())
}

// readLength reads the netstring length and its ':'.
func readLength(br *bufio.Reader, max int) (int, error) {
	n, digits := 0, 0
	for {
		b, err := br.ReadByte()
		if err != nil {
			if digits == 0 && err == io.EOF {
				return 0, io.EOF // closed before sending anything
			}
			return 0, fmt.Errorf("header length: %w", noEOF(err))
		}
		switch {
		case b >= '0' && b <= '9':
			if digits == 1 && n == 0 {
				return 0, errors.New("header length has a leading zero")
			}
			if digits == maxLengthDigits {
				return 0, errors.New("header length has too many digits")
			}
			n = n*10 + int(b-'0')
			digits++
			if n > max {
				return 0, fmt.Errorf("header length over %d bytes", max)
			}
		case b == ':' && digits > 0:
			return n, nil
		default:
			return 0, fmt.Errorf("header length: unexpected byte %q", b)
		}
	}
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseParams splits the NUL-separated pairs of a header block and applies
// the spec's musts: CONTENT_LENGTH first, SCGI=1, no duplicate names.
func parseParams(block []byte) (map[string]string, error) {
	if len(block) == 0 || block[len(block)-1] != 0 {
		return nil, fmt.Errorf("%w: block does not end with NUL", errBadParams)
	}
	fields := bytes.Split(block[:len(block)-1], []byte{0})
	if len(fields)%2 != 0 {
		return nil, fmt.Errorf("%w: name %q has no value", errBadParams, fields[len(fields)-1])
	}
	params := make(map[string]string, len(fields)/2)
	for i := 0; i < len(fields); i += 2 {
		name := string(fields[i])
		if name == "" {
			return nil, fmt.Errorf("%w: empty name", errBadParams)
		}
		if i == 0 && name != "CONTENT_LENGTH" {
			return nil, fmt.Errorf("%w: first variable is %q, want CONTENT_LENGTH", errBadParams, name)
		}
		if _, dup := params[name]; dup {
			return nil, fmt.Errorf("%w: duplicate %s", errBadParams, name)
		}
		params[name] = string(fields[i+1])
	}
	if params["SCGI"] != "1" {
		return nil, fmt.Errorf("%w: SCGI=%q, want 1", errBadParams, params["SCGI"])
	}
	return params, nil
}
