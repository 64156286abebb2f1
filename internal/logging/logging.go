// Package logging builds the slog.Logger of every porthole command from
// its -log-level and -log-format flags: text (logfmt, for people) or JSON
// (one object per line, for a log pipeline).
package logging

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Flags are a command's logging flags.
type Flags struct {
	Level, Format string
}

// Register adds -log-level and -log-format to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.Format, "log-format", "text", "text (key=value) or json (one object per line)")
}

// Check validates the flags; the error names the flag at fault.
func (f *Flags) Check() error {
	_, err := f.handlerOptions()
	if err != nil {
		return err
	}
	switch f.Format {
	case "text", "json":
		return nil
	}
	return fmt.Errorf("-log-format %q: want text or json", f.Format)
}

func (f *Flags) handlerOptions() (*slog.HandlerOptions, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.Level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", f.Level)
	}
	return &slog.HandlerOptions{Level: level}, nil
}

// Logger returns a logger writing to w as the flags say; the error names
// the flag at fault.
func (f *Flags) Logger(w io.Writer) (*slog.Logger, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	o, _ := f.handlerOptions()
	if f.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return slog.New(slog.NewTextHandler(w, o)), nil
}
