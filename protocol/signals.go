package protocol

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
)

// signals maps names without the SIG prefix to Linux signal numbers. Names
// are used on the wire because numbers differ between platforms.
var signals = map[string]syscall.Signal{
	"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7,
	"FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13,
	"ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19,
	"TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25,
	"VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "PWR": 30, "SYS": 31,
}

// ParseSignal accepts "TERM", "SIGTERM", "term" or "15". Numbers must be
// 1..64 (Linux, real-time signals included).
func ParseSignal(s string) (syscall.Signal, error) {
	if s == "" {
		return 0, fmt.Errorf("signal is empty: want a name like TERM or a number like 15")
	}
	if s[0] >= '0' && s[0] <= '9' {
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("signal %q is not a number nor a name", s)
		}
		if n < 1 || n > 64 {
			return 0, fmt.Errorf("signal number %d out of range 1..64", n)
		}
		return syscall.Signal(n), nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if sig, ok := signals[name]; ok {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// SignalName is the wire name of a signal ("KILL"), or its number when it
// has no name (real-time signals).
func SignalName(sig syscall.Signal) string {
	for name, n := range signals {
		if n == sig {
			return name
		}
	}
	return strconv.Itoa(int(sig))
}
