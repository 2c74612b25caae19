module github.com/fcgishim/fcgishim

go 1.26.8

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/fsnotify/fsnotify v1.10.1
	golang.org/x/sys v0.49.0
)
