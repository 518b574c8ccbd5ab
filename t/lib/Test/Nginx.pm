package Test::Nginx;

# Test harness for nginx modules, written from scratch for this project
# while keeping the interface of nginx's own test suite (nginx-tests),
# so that tests read the way nginx developers expect.

=head1 NAME

Test::Nginx - run nginx instances from perl tests

=head1 SYNOPSIS

    use strict;
    use warnings;
    use Test::More;

    use FindBin;
    use lib "$FindBin::Bin/lib";
    use Test::Nginx;                    # port wait_for http_get http ...
    use Test::Nginx::Stream qw/ stream /;

    my $t = Test::Nginx->new()->has(qw/http stream zone_sync/)->plan(3);

    $t->write_file_expand('nginx.conf', <<'EOF');

    %%TEST_GLOBALS%%

    events {
    }

    http {
        %%TEST_GLOBALS_HTTP%%

        server {
            listen       127.0.0.1:8080;
            location / { return 200 "hello"; }
        }
    }

    stream {
        %%TEST_GLOBALS_STREAM%%

        server {
            listen       127.0.0.1:8081;
            return       "stream";
        }
    }

    EOF

    $t->run();

    like(http_get('/'), qr/hello/, 'http');
    is(stream('127.0.0.1:' . port(8081))->read(), 'stream', 'stream');

    my ($code, $out) = $t->test_config();
    is($code, 0, 'nginx -t');

    # at exit: nginx is stopped and one more test, "no alerts in
    # error.log", is emitted; plan(3) declared 3 + 1 tests.

=head1 DESCRIPTION

=head2 Binary, module and environment

=over

=item TEST_NGINX_BINARY

nginx binary.  Default C<< <repo>/build/nginx >>; when that does not
exist, the newest C<< <repo>/target/{debug,release}/build/nginx-sys-*/out/objs/nginx >>.
It is always started as C<< nginx -p <testdir>/ -c nginx.conf -e <testdir>/error.log >>,
so its built-in prefix never matters.

=item TEST_NGINX_MODULE

Our dynamic module.  Default C<< <repo>/build/ngx_stream_zone_sync_module.so >>.
If the file does not exist, no C<load_module> line is emitted and the
C<zone_sync> feature is missing (C<< has('zone_sync') >> skips).

=item TEST_NGINX_MODULES_DIR

Where C<ngx_stream_module.so> lives when the binary has stream as a
dynamic module (C<--with-stream=dynamic>, e.g. Debian's nginx).
Default F</usr/lib/nginx/modules>.

=item TEST_NGINX_GLOBALS, TEST_NGINX_GLOBALS_HTTP, TEST_NGINX_GLOBALS_STREAM

Extra lines appended to C<%%TEST_GLOBALS%%>, C<%%TEST_GLOBALS_HTTP%%>,
C<%%TEST_GLOBALS_STREAM%%>.

=item TEST_NGINX_LEAVE

Keep test directories (their path is printed).

=item TEST_NGINX_VERBOSE

Trace requests/responses and harness actions as TAP comments.

=item TEST_NGINX_CATLOG

Print each error log at the end of the test.

=item TEST_NGINX_LOG_LEVEL

The level of C<%%TEST_GLOBALS%%>'s error_log (default C<debug>; long
runs such as scripts/soak use C<info>).

=item TEST_NGINX_TIMEOUT_SCALE

Multiply all harness timeouts (slow sanitizer builds).

=back

=head2 Configuration tokens (write_file_expand)

C<%%TEST_GLOBALS%%> (main context: C<load_module> lines, C<master_process
on; daemon off;>, C<pid>, C<error_log ... debug>), C<%%TEST_GLOBALS_HTTP%%>
(access log and temp paths inside the test directory),
C<%%TEST_GLOBALS_STREAM%%>, C<%%TESTDIR%%>, C<%%PORT_8080%%> (also
C<%%PORT_8080_UDP%%>), and the literal forms C<127.0.0.1:8xxx>,
C<localhost:8xxx> and C<[::1]:8xxx>, which are rewritten to the mapped
port exactly as C<port(8xxx)> returns it.  Unknown C<%%TOKENS%%> are an
error.

=head2 Processes and permissions

nginx runs with C<master_process on; daemon off;>: the master is a
direct child of the test, so the harness can C<waitpid> it (exit status,
crash signal), its stderr is captured in C<< <testdir>/stderr >> (where
sanitizer reports land), Ctrl-C reaches it, and on Linux it gets
C<PR_SET_PDEATHSIG> so it is terminated even if the test process is
killed.  Readiness is detected by polling: the pid file holding the
master pid, every C<listen> port of nginx.conf accepting, and one
"start worker process" line per worker in the error log.

When run as root, workers run as nginx's default user (C<nobody>), as in
production.  To let them work, every test directory is created mode 0777
(files written by write_file keep the umask, normally 0644: readable).
Temp paths are created by the master and chowned to the worker user.

=head2 Error log checks

At the end (object destruction or END, after nginx is stopped) the error
log and captured stderr are scanned for C<[alert]>, C<[emerg]>,
C<[crit]>, C<exited on signal>, sanitizer reports (C<ERROR:
AddressSanitizer>, C<LeakSanitizer>, C<ThreadSanitizer>, C<runtime
error:>), Rust panics (C<thread '...' panicked at>) and an unexpected
master exit; the result is one test, C<no alerts in error.log> (prefixed
with the node name for cluster nodes).  C<plan(N)> declares C<N> plus one such test for
every Test::Nginx object alive at that moment (every node of a
Test::Nginx::Cluster), so create all objects before calling C<plan>.
Output of C<test_config> never counts (it uses its own startup log and
the error log range it appended to is excluded).  C<todo_alerts> marks
the check TODO; C<ignore_log(qr/.../)> exempts matching lines.

=head2 Methods

    Test::Nginx->new()                 # own temp dir nginx-test-XXXXXXXXXX
    ->has(@features)                   # skip_all "no X available" if missing
    ->has_module($feature)             # boolean; http stream stream_ssl
                                       # http_ssl (ssl) proxy rewrite
                                       # stream_return zone_sync debug ...
    ->has_version('1.25.0')            # boolean
    ->has_daemon('openssl')            # skip_all if not in PATH
    ->wrap(@prefix)                    # run nginx via e.g. ip netns exec NS
    ->plan($n)                         # $n + one log check per live object
    ->todo_alerts  ->ignore_log(qr/../)
    ->write_file($name, $content)  ->write_file_expand($name, $content)
    ->read_file($name)  ->testdir  ->expand($text)
    ->test_globals  ->test_globals_http  ->test_globals_stream
    ->run  ->try_run($message)         # run dies with stderr + error.log
    ->stop                             # daemons, then QUIT/TERM/KILL
    ->stop_nginx  ->kill_nginx($sig)   # KILL: master and workers at once
    ->reload(wait_old => 0)            # 1: new workers up, 0: refused
    ->test_config($conf)               # (exit code, output) of nginx -t
    ->run_daemon(\&code, @args)        # or ($program, @args); pid
    ->stop_daemons
    ->waitforsocket('127.0.0.1:' . port(8081))     # 1/0, polls 10s
    ->waitforfile($name, $pid)
    ->master_pid  ->pids  ->worker_pids  ->is_running  ->http_port

=head2 Exported functions

    port(8080)                 # real port for a symbolic one
    wait_for(sub { ... }, timeout => 10, interval => 0.05, name => '..')
    http($raw_request, socket => $s, start => 1, SSL => 1,
        PeerAddr => 'host:port', port => $real_port, timeout => 8)
    http_get($uri, %opts)  http_head($uri, %opts)
    http_post($uri, $body, %opts)
    http_request($method, $uri, $body, headers => {...}, %opts)
    http_start($raw, %opts)  http_end($socket, %opts)
    http_status($response)  http_content($response)   # de-chunked
    http_json($t_or_port_or_addr, $method, $uri, $body_ref_or_string)
        # -> (status, decoded JSON or undef, raw response)
    log_in  log_out            # TEST_NGINX_VERBOSE tracing

Requests are HTTP/1.0 with C<Host: localhost>; responses are read
until the server closes the connection (or the timeout).

=cut

use strict;
use warnings;

use Cwd qw(abs_path);
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Spec;
use File::Temp ();
use IO::Select;
use IO::Socket::IP;
use JSON::PP ();
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken blessed looks_like_number);
use Test::More ();
use Time::HiRes ();

use Test::Nginx::Util qw(wait_for port scaled proc_children proc_alive
    proc_cmdline slurp spit verbose);

our @EXPORT = qw(
    port wait_for
    http http_get http_head http_post http_request http_start http_end
    http_content http_status http_json
    log_in log_out
);

our $REPO = abs_path(dirname(__FILE__) . '/../../..');

my @REGISTRY;           # weak refs to every live Test::Nginx object
my %NGINX_V;            # nginx -V output cache, per binary

###############################################################################
#
# Binary, module and feature detection.

sub nginx_binary {
    my $env = $ENV{TEST_NGINX_BINARY};
    return $env if defined $env && $env ne '';

    my $built = "$REPO/build/nginx";
    return $built if -x $built;

    # a cargo build of the module compiles nginx in nginx-sys' out dir
    my @found = sort { (stat $b)[9] <=> (stat $a)[9] }
        grep { -x } glob("$REPO/target/{debug,release}/build/"
            . "nginx-sys-*/out/objs/nginx");
    return @found ? $found[0] : $built;
}

sub module_path {
    my $env = $ENV{TEST_NGINX_MODULE};
    return $env if defined $env && $env ne '';
    return "$REPO/build/ngx_stream_zone_sync_module.so";
}

sub modules_dir {
    my $env = $ENV{TEST_NGINX_MODULES_DIR};
    return $env if defined $env && $env ne '';
    return '/usr/lib/nginx/modules';
}

# run a command, return (exit code, combined stdout+stderr);
# exit code is 128+N when killed by signal N
sub _capture {
    my (@cmd) = @_;
    pipe(my $r, my $w) or die "pipe: $!\n";
    my $pid = fork();
    die "fork: $!\n" unless defined $pid;
    if ($pid == 0) {
        close $r;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>&', $w;
        open STDERR, '>&', $w;
        exec { $cmd[0] } @cmd
            or print STDERR "cannot exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    close $w;
    my $out = do { local $/; <$r> };
    close $r;
    waitpid($pid, 0);
    my $code = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    return ($code, defined $out ? $out : '');
}

sub nginx_V {
    my $bin = nginx_binary();
    return $NGINX_V{$bin} //= (_capture($bin, '-V'))[1];
}

sub _stream_dynamic {
    return nginx_V() =~ /--with-stream=dynamic\b/ ? 1 : 0;
}

# Modules nginx builds only when asked (--with-...); everything else
# under http_/stream_ is built by default unless --without-... is given.
my %OPT_IN = map { $_ => 1 } qw(
    http_ssl http_v2 http_v3 http_realip http_addition http_xslt
    http_image_filter http_geoip http_sub http_dav http_flv http_mp4
    http_gunzip http_gzip_static http_auth_request http_random_index
    http_secure_link http_degradation http_slice http_stub_status
    http_perl stream_ssl stream_realip stream_geoip stream_ssl_preread
    mail_ssl
);

# nginx-tests style short names
my %ALIAS = (
    ssl => 'http_ssl',
    realip => 'http_realip',
    'ssl_preread' => 'stream_ssl_preread',
);

sub has_module {
    my ($self, $feature) = @_;
    my $v = nginx_V();

    return -f module_path() ? 1 : 0 if $feature eq 'zone_sync';
    return 1 if $feature =~ /^(?:ipv6|unix|udp)$/;
    return $v =~ /--with-debug\b/ ? 1 : 0 if $feature eq 'debug';
    return $v =~ /--with-threads\b/ ? 1 : 0 if $feature eq 'threads';
    return $v =~ /--with-compat\b/ ? 1 : 0 if $feature eq 'compat';
    return $v =~ /--without-http(?:\s|$)/ ? 0 : 1 if $feature eq 'http';
    return $v =~ /--with-mail(?:=dynamic)?\b/ ? 1 : 0 if $feature eq 'mail';
    return $v =~ /--without-pcre\b/ ? 0 : 1 if $feature eq 'pcre';
    return $v =~ /--without-http-cache\b/ ? 0 : 1 if $feature eq 'cache';

    if ($feature eq 'stream') {
        return 1 if $v =~ /--with-stream(?:\s|$)/;
        return -f modules_dir() . '/ngx_stream_module.so' ? 1 : 0
            if $v =~ /--with-stream=dynamic\b/;
        return 0;
    }

    my $m = $ALIAS{$feature} // $feature;
    $m = "http_$m" unless $m =~ /^(?:http|stream|mail)_/;
    my ($family) = $m =~ /^([a-z]+)_/;

    return 0 unless $self->has_module($family);
    return 0 if $m eq 'http_rewrite' && $v =~ /--without-pcre\b/;
    return 0 if $v =~ /--without-\Q$m\E_module\b/;

    if ($v =~ /--with-\Q$m\E_module(=dynamic)?\b/) {
        # dynamic http/mail modules would need their own load_module;
        # stream submodules are compiled into the stream .so
        return 1 unless $1;
        return 0;
    }
    return $OPT_IN{$m} ? 0 : 1;
}

###############################################################################
#
# Construction and test plan.

sub new {
    my ($class, %opts) = @_;

    my $bin = nginx_binary();
    die "nginx binary not found or not executable: $bin\n"
        . "(set TEST_NGINX_BINARY, or build it)\n" unless -x $bin;

    my $self = bless {
        _owner => $$,
        _name => $opts{name},
        _daemons => [],
        _ignore => [],
        _skip_ranges => [],
        _notes => [],
        _http_port => $opts{http_port},
    }, $class;

    if (defined $opts{testdir}) {
        make_path($opts{testdir});
        $self->{_testdir} = $opts{testdir};
        $self->{_cleanup} = $opts{cleanup} ? 1 : 0;
    } else {
        $self->{_testdir} = File::Temp::tempdir('nginx-test-XXXXXXXXXX',
            TMPDIR => 1, CLEANUP => 0);
        $self->{_cleanup} = 1;
    }

    # workers run as nobody when we are root: let them in
    chmod 0777, $self->{_testdir};
    make_path("$self->{_testdir}/logs");
    chmod 0777, "$self->{_testdir}/logs";

    push @REGISTRY, $self;
    weaken($REGISTRY[-1]);

    _subreaper_init();

    return $self;
}

sub testdir { return $_[0]->{_testdir} }

sub name { return $_[0]->{_name} }

sub has {
    my ($self, @features) = @_;
    for my $f (@features) {
        next if $self->has_module($f);
        Test::More::plan(skip_all => "no $f available");
    }
    return $self;
}

sub has_version {
    my ($self, $need) = @_;
    my ($have) = nginx_V() =~ m{nginx version: \S+?/(\d+(?:\.\d+)*)};
    return 0 unless defined $have;
    my @h = split /\./, $have;
    my @n = split /\./, $need;
    for my $i (0 .. $#n) {
        my $x = $h[$i] // 0;
        return 1 if $x > $n[$i];
        return 0 if $x < $n[$i];
    }
    return 1;
}

sub has_daemon {
    my ($self, $daemon) = @_;
    my @paths = $daemon =~ m{/} ? ($daemon)
        : map { "$_/$daemon" } split /:/, ($ENV{PATH} // '');
    return $self if grep { -f $_ && -x _ } @paths;
    Test::More::plan(skip_all => "no $daemon available");
}

# The number of log-check tests that will be added for all live objects.
sub _arm_log_checks {
    my @objs = grep { defined } @REGISTRY;
    $_->{_log_checks} = 1 for @objs;
    return scalar @objs;
}

sub plan {
    my ($self, $plan) = @_;
    Test::More::plan(tests => $plan + _arm_log_checks());
    return $self;
}

sub todo_alerts {
    my ($self) = @_;
    $self->{_todo_alerts} = 1;
    return $self;
}

# exempt error log lines matching the regex from the alert check
sub ignore_log {
    my ($self, @re) = @_;
    push @{$self->{_ignore}}, @re;
    return $self;
}

###############################################################################
#
# Files and configuration.

sub _path {
    my ($self, $name) = @_;
    return $name if File::Spec->file_name_is_absolute($name);
    return "$self->{_testdir}/$name";
}

sub write_file {
    my ($self, $name, $content) = @_;
    my $path = $self->_path($name);
    make_path(dirname($path));
    spit($path, $content);
    return $self;
}

sub read_file {
    my ($self, $name) = @_;
    return slurp($self->_path($name));
}

sub write_file_expand {
    my ($self, $name, $content) = @_;
    $self->{_test_globals} = 1
        if $name eq 'nginx.conf' && $content =~ /%%TEST_GLOBALS%%/;
    return $self->write_file($name, $self->expand($content));
}

sub test_globals {
    my ($self) = @_;
    my $dir = $self->{_testdir};
    my $s = '';

    $s .= "load_module " . modules_dir() . "/ngx_stream_module.so;\n"
        if _stream_dynamic();
    $s .= "load_module " . module_path() . ";\n" if -f module_path();

    $s .= "master_process on;\n";
    $s .= "daemon off;\n";
    $s .= "pid $dir/nginx.pid;\n";
    $s .= "error_log $dir/error.log " . ($ENV{TEST_NGINX_LOG_LEVEL} // 'debug')
        . ";\n";
    $s .= "$ENV{TEST_NGINX_GLOBALS}\n"
        if defined $ENV{TEST_NGINX_GLOBALS};

    return $s;
}

sub test_globals_http {
    my ($self) = @_;
    my $dir = $self->{_testdir};
    my $s = '';

    $s .= "access_log $dir/access.log;\n";
    $s .= "client_body_temp_path $dir/client_body_temp;\n";
    $s .= "proxy_temp_path $dir/proxy_temp;\n"
        if $self->has_module('proxy');
    $s .= "fastcgi_temp_path $dir/fastcgi_temp;\n"
        if $self->has_module('fastcgi');
    $s .= "uwsgi_temp_path $dir/uwsgi_temp;\n"
        if $self->has_module('uwsgi');
    $s .= "scgi_temp_path $dir/scgi_temp;\n"
        if $self->has_module('scgi');
    $s .= "$ENV{TEST_NGINX_GLOBALS_HTTP}\n"
        if defined $ENV{TEST_NGINX_GLOBALS_HTTP};

    return $s;
}

sub test_globals_stream {
    my ($self) = @_;
    my $s = '';
    $s .= "$ENV{TEST_NGINX_GLOBALS_STREAM}\n"
        if defined $ENV{TEST_NGINX_GLOBALS_STREAM};
    return $s;
}

# Insert a multi-line block in place of a token, indenting every line
# like the token itself.
sub _block {
    my ($indent, $text) = @_;
    my @lines = split /\n/, $text;
    return '' unless @lines;
    return join("\n", map { $indent . $_ } @lines);
}

sub expand {
    my ($self, $content) = @_;

    $content =~ s/^([ \t]*)%%TEST_GLOBALS%%/_block($1, $self->test_globals)/gme;
    $content =~ s/^([ \t]*)%%TEST_GLOBALS_HTTP%%/
        _block($1, $self->test_globals_http)/gmex;
    $content =~ s/^([ \t]*)%%TEST_GLOBALS_STREAM%%/
        _block($1, $self->test_globals_stream)/gmex;
    $content =~ s/%%TESTDIR%%/$self->{_testdir}/g;

    $content =~ s/%%PORT_(\d+)_UDP%%/port($1, udp => 1)/ge;
    $content =~ s/%%PORT_(\d+)%%/port($1)/ge;
    $content =~ s/\b127\.0\.0\.1:(8\d\d\d)\b/'127.0.0.1:' . port($1)/ge;
    $content =~ s/\blocalhost:(8\d\d\d)\b/'localhost:' . port($1)/ge;
    $content =~ s/\[::1\]:(8\d\d\d)\b/'[::1]:' . port($1)/ge;

    if ($content =~ /(%%[A-Z][A-Z0-9_]*%%)/) {
        die "unknown token $1 in configuration\n";
    }

    return $content;
}

# nginx -g arguments for configs written without %%TEST_GLOBALS%%
sub _cmdline_globals {
    my ($self) = @_;
    return () if $self->{_test_globals};
    (my $g = $self->test_globals) =~ s/\n/ /g;
    return ('-g', $g);
}

# "listen" ports of a config, for readiness checks: [host, port] pairs;
# UDP and unix sockets are skipped
sub _listen_addrs {
    my ($self, $conf) = @_;
    my $text = $self->read_file($conf) // return ();
    $text =~ s/#.*//g;
    my @addrs;
    while ($text =~ /(?:^|[;{}])\s*listen\s+([^;]*);/g) {
        my @args = split ' ', $1;
        next if !@args || $args[0] =~ /^unix:/
            || grep { $_ eq 'udp' || $_ eq 'quic' } @args;
        my $a = $args[0];
        if ($a =~ /^\[([^\]]+)\]:(\d+)$/) {
            push @addrs, [$1, $2];
        } elsif ($a =~ /^([^:]+):(\d+)$/) {
            push @addrs, [$1 eq '*' || $1 eq '0.0.0.0' ? '127.0.0.1' : $1,
                $2];
        } elsif ($a =~ /^(\d+)$/) {
            push @addrs, ['127.0.0.1', $1];
        }
    }
    return @addrs;
}

sub _ncpu {
    my $online = 0;
    if (my $s = slurp('/sys/devices/system/cpu/online')) {
        for (split /,/, $s) {
            $online += /^(\d+)-(\d+)/ ? $2 - $1 + 1 : /^\d+/ ? 1 : 0;
        }
    }
    my $allowed = 0;
    if (my $s = slurp('/proc/self/status')) {
        if ($s =~ /^Cpus_allowed_list:\s*(\S+)/m) {
            for (split /,/, $1) {
                $allowed += /^(\d+)-(\d+)/ ? $2 - $1 + 1 : 1;
            }
        }
    }
    my @n = grep { $_ > 0 } ($online, $allowed);
    return @n ? (sort { $a <=> $b } @n)[0] : 1;
}

# how many worker processes the config asks for (0 without master)
sub _expected_workers {
    my ($self, $conf) = @_;
    my $text = $self->read_file($conf) // '';
    $text =~ s/#.*//g;
    return 0 if $text =~ /^\s*master_process\s+off\s*;/m;
    if ($text =~ /^\s*worker_processes\s+(\S+?)\s*;/m) {
        return $1 eq 'auto' ? _ncpu() : $1;
    }
    return 1;
}

###############################################################################
#
# Process control.

my $PDEATHSIG_OK;

# Linux: have the kernel send SIGTERM to a forked child when the test
# process dies, so no nginx outlives a killed test.  Best effort: needs
# syscall.ph (perl's h2ph headers), loaded once in the parent.
sub _pdeathsig_init {
    return $PDEATHSIG_OK if defined $PDEATHSIG_OK;
    local $SIG{__WARN__} = sub {};
    local $@;
    $PDEATHSIG_OK = eval {
        package main;
        require 'syscall.ph';
        defined &main::SYS_prctl;
    } ? 1 : 0;
    return $PDEATHSIG_OK;
}

# Linux: become a child subreaper, so that workers of a master killed by
# kill_nginx() are re-parented to the test and reaped here (see _reap)
# instead of lingering as zombies.  Best effort.
my $SUBREAPER;

sub _subreaper_init {
    return if $SUBREAPER || !_pdeathsig_init();
    syscall(&main::SYS_prctl, 36, 1);    # PR_SET_CHILD_SUBREAPER
    $SUBREAPER = 1;
}

# forget processes that exited: reap them if they are (now) ours
sub _reap {
    my (@pids) = @_;
    waitpid($_, WNOHANG) for @pids;
    return grep { proc_alive($_) } @pids;
}

# in the child, right after fork()
sub _set_pdeathsig {
    my ($parent) = @_;
    return unless $PDEATHSIG_OK;
    syscall(&main::SYS_prctl, 1, 15);    # PR_SET_PDEATHSIG, SIGTERM
    # the parent may have died before prctl() took effect
    POSIX::_exit(1) if getppid() != $parent;
}

sub _spawn {
    my ($self, $stderr, @cmd) = @_;
    my $parent = $$;
    _pdeathsig_init();
    my $pid = fork();
    die "fork: $!\n" unless defined $pid;
    return $pid if $pid;

    _set_pdeathsig($parent);
    open STDIN, '<', '/dev/null';
    open STDOUT, '>>', $stderr;
    open STDERR, '>>', $stderr;
    exec { $cmd[0] } @cmd
        or print STDERR "cannot exec $cmd[0]: $!\n";
    POSIX::_exit(127);
}

sub master_pid { return $_[0]->{_master} }

# run nginx through a command prefix that execs it in place (the master
# keeps the pid), e.g. ('ip', 'netns', 'exec', NS): see Test::Nginx::Netns
sub wrap {
    my ($self, @prefix) = @_;
    $self->{_wrap} = [@prefix];
    return $self;
}

# Reaps the master if it exited; records unexpected exits.
sub is_running {
    my ($self) = @_;
    my $pid = $self->{_master} or return 0;
    my $r = waitpid($pid, WNOHANG);
    return 1 if $r == 0;

    my $status = $r == $pid ? $? : 0;
    delete $self->{_master};
    $self->{_exit_status} = $status;

    if ($self->{_started}) {
        my $sig = $status & 127;
        my $code = $status >> 8;
        if ($sig && !$self->{_sent_kill}) {
            push @{$self->{_notes}},
                "nginx master process $pid exited on signal $sig";
        } elsif ($code && !$sig) {
            push @{$self->{_notes}},
                "nginx master process $pid exited with code $code";
        }
    }
    $self->{_started} = 0;
    return 0;
}

# all processes of this nginx: master and its children
sub pids {
    my ($self) = @_;
    return () unless $self->is_running;
    return ($self->{_master}, proc_children($self->{_master}));
}

sub worker_pids {
    my ($self) = @_;
    return () unless $self->is_running;
    return grep { proc_cmdline($_) =~ /worker process/ }
        proc_children($self->{_master});
}

sub _log_size {
    my ($self) = @_;
    return -s "$self->{_testdir}/error.log" || 0;
}

sub _log_since {
    my ($self, $offset) = @_;
    open my $fh, '<:raw', "$self->{_testdir}/error.log" or return '';
    seek($fh, $offset, 0);
    local $/;
    my $s = <$fh>;
    return defined $s ? $s : '';
}

sub _read_pid {
    my ($self) = @_;
    my $s = slurp("$self->{_testdir}/nginx.pid") // return 0;
    return $s =~ /^(\d+)/ ? $1 : 0;
}

sub _tail {
    my ($text, $lines) = @_;
    my @l = split /\n/, $text // '';
    splice(@l, 0, @l - $lines) if @l > $lines;
    return join("\n", @l);
}

sub run {
    my ($self, %opts) = @_;
    my $dir = $self->{_testdir};
    my $conf = $opts{conf} // 'nginx.conf';

    die "nginx is already running in $dir\n" if $self->is_running;

    unlink "$dir/nginx.pid";
    my $offset = $self->_log_size();
    my $stderr_offset = -s "$dir/stderr" || 0;

    my @cmd = (@{$self->{_wrap} // []}, nginx_binary(), '-p', "$dir/", '-c', $conf,
        '-e', "$dir/error.log", $self->_cmdline_globals);
    Test::More::diag("starting: @cmd") if verbose();

    my $pid = $self->_spawn("$dir/stderr", @cmd);
    $self->{_master} = $pid;
    $self->{_sent_kill} = 0;
    $self->{_conf} = $conf;

    my $err;
    my $up = wait_for(sub {
        !$self->is_running || $self->_read_pid() == $pid
    }, timeout => 10, name => 'nginx pid file');

    if (!$self->is_running) {
        my $st = $self->{_exit_status} // 0;
        $err = $st & 127 ? "nginx exited on signal " . ($st & 127)
            : "nginx exited with code " . ($st >> 8);
    } elsif (!$up) {
        $err = "nginx did not write $dir/nginx.pid";
    }

    unless ($err) {
        for my $a ($self->_listen_addrs($conf)) {
            my $peer = $a->[0] =~ /:/ ? "[$a->[0]]:$a->[1]" : "$a->[0]:$a->[1]";
            next if $self->waitforsocket($peer);
            $err = "nginx does not accept on $peer";
            last;
        }
    }

    unless ($err) {
        my $n = $self->_expected_workers($conf);
        if ($n && !$self->_wait_workers($offset, $n)) {
            $err = "nginx did not start $n worker process(es)";
        }
    }

    if ($err) {
        $self->_kill_processes('KILL');
        my $errlog = _tail($self->_log_since($offset), 40);
        my $stderr = slurp("$dir/stderr") // '';
        $stderr = substr($stderr, $stderr_offset);
        die "$err\ncommand: @cmd\n"
            . ($stderr ne '' ? "--- stderr:\n$stderr\n" : '')
            . "--- error.log (tail):\n$errlog\n";
    }

    $self->{_started} = 1;
    return $self;
}

# like run(), but skip the whole test file when nginx does not start
sub try_run {
    my ($self, $message, %opts) = @_;
    eval { $self->run(%opts) };
    return $self unless $@;
    Test::More::diag($@) if verbose();
    Test::More::plan(skip_all => $message);
}

# wait until $n "start worker process" lines appear after $offset
sub _wait_workers {
    my ($self, $offset, $n) = @_;
    return wait_for(sub {
        my @l = $self->_log_since($offset) =~ /start worker process \d+/g;
        @l >= $n || !$self->is_running;
    }, timeout => 10, name => 'worker processes') && $self->is_running;
}

# HUP and wait until the new workers are started.  Returns 1 when the
# new configuration is in effect, 0 when nginx refused it ([emerg] in
# the log; old workers keep running) or did not react in time.
# Option wait_old => 1 also waits for the old workers to exit.
sub reload {
    my ($self, %opts) = @_;
    die "nginx is not running\n" unless $self->is_running;

    my $offset = $self->_log_size();
    my @old = $self->worker_pids();
    my $n = $self->_expected_workers($self->{_conf} // 'nginx.conf') || 1;

    kill 'HUP', $self->{_master};

    my $result = 0;
    wait_for(sub {
        return 1 unless $self->is_running;
        my $log = $self->_log_since($offset);
        my @started = $log =~ /start worker process \d+/g;
        if (@started >= $n) {
            $result = 1;
            return 1;
        }
        return 1 if $log =~ /\[emerg\]/;
        return 0;
    }, timeout => 10, name => 'reload');

    if ($result && $opts{wait_old}) {
        wait_for(sub { !grep { proc_alive($_) } @old },
            timeout => 10, name => 'old workers exit');
    }

    return $result;
}

# Send $sig to the master; with KILL the whole process tree is killed
# at once (a crash: no graceful shutdown).  Waits for the master.
sub _kill_processes {
    my ($self, $sig) = @_;
    return unless $self->is_running;
    my @kids = proc_children($self->{_master});
    $self->{_sent_kill} = 1;
    kill $sig, $self->{_master};
    kill $sig, @kids if $sig eq 'KILL' || $sig eq '9';
    wait_for(sub { !$self->is_running }, timeout => 10,
        name => "nginx exit on $sig");
    if ($sig eq 'KILL' || $sig eq '9') {
        wait_for(sub { !_reap(@kids) }, timeout => 5);
    }
}

sub kill_nginx {
    my ($self, $sig) = @_;
    $self->_kill_processes($sig // 'KILL');
    return $self;
}

# Graceful stop of several instances at once (QUIT, then TERM, then
# KILL, each with a deadline).
sub _stop_many {
    my (@objs) = @_;
    my @run = grep { $_->is_running } @objs;
    return unless @run;

    # children are collected now: they may outlive a KILLed master
    my %kids = map { $_->{_master} => [proc_children($_->{_master})] } @run;

    for my $step (['QUIT', 10], ['TERM', 5], ['KILL', 5]) {
        my ($sig, $timeout) = @$step;
        @run = grep { $_->is_running } @run;
        last unless @run;

        if ($sig ne 'QUIT') {
            Test::More::diag("nginx in $_->{_testdir} did not exit, "
                . "sending $sig") for @run;
        }
        for my $o (@run) {
            $o->{_sent_kill} = 1 if $sig eq 'KILL';
            kill $sig, $o->{_master};
            kill $sig, @{$kids{$o->{_master}}} if $sig eq 'KILL';
        }
        wait_for(sub { !grep { $_->is_running } @run },
            timeout => $timeout);
    }

    wait_for(sub { !_reap(map { @$_ } values %kids) }, timeout => 5);
}

sub stop_nginx {
    my ($self) = @_;
    _stop_many($self);
    return $self;
}

# Helper daemons go first: a proxied session to a daemon that never
# closes would otherwise hold up nginx's graceful shutdown.
sub stop {
    my ($self) = @_;
    $self->stop_daemons();
    _stop_many($self);
    return $self;
}

###############################################################################
#
# Helper daemons.

# run_daemon(\&code, @args) forks and runs code(@args) in the child;
# run_daemon($program, @args) runs a program.  Stopped by stop().
sub run_daemon {
    my ($self, $code, @args) = @_;
    my $parent = $$;
    _pdeathsig_init();

    my $pid = fork();
    die "fork: $!\n" unless defined $pid;

    if ($pid == 0) {
        _set_pdeathsig($parent);
        # keep daemon output out of the TAP stream
        open STDOUT, '>&', \*STDERR;
        if (ref $code eq 'CODE') {
            $SIG{$_} = 'DEFAULT' for qw(INT TERM);
            eval { $code->(@args) };
            print STDERR "daemon died: $@" if $@;
            POSIX::_exit($@ ? 1 : 0);
        }
        open STDIN, '<', '/dev/null';
        exec { $code } $code, @args
            or print STDERR "cannot exec $code: $!\n";
        POSIX::_exit(127);
    }

    push @{$self->{_daemons}}, $pid;
    return $pid;
}

sub stop_daemons {
    my ($self) = @_;
    my @pids = @{$self->{_daemons}};
    $self->{_daemons} = [];
    return $self unless @pids;

    my %alive = map { $_ => 1 } @pids;
    my $reap = sub {
        for my $p (keys %alive) {
            my $r = waitpid($p, WNOHANG);
            delete $alive{$p} if $r == $p || $r == -1;
        }
        return !%alive;
    };

    kill 'TERM', @pids;
    unless (wait_for($reap, timeout => 5)) {
        kill 'KILL', keys %alive;
        wait_for($reap, timeout => 5);
    }
    return $self;
}

###############################################################################
#
# Waiting.

sub waitforsocket {
    my ($self, $peer, %opts) = @_;
    return wait_for(sub {
        my $s = IO::Socket::IP->new(PeerAddr => $peer, Proto => 'tcp',
            Timeout => 1);
        return 0 unless $s;
        close $s;
        return 1;
    }, timeout => $opts{timeout} // 10, name => "socket $peer") ? 1 : 0;
}

sub waitforfile {
    my ($self, $file, $pid, %opts) = @_;
    $file = $self->_path($file);
    return wait_for(sub {
        return 1 if -e $file;
        return 'gone' if $pid && !proc_alive($pid);
        return 0;
    }, timeout => $opts{timeout} // 10, name => "file $file") eq '1'
        ? 1 : 0;
}

###############################################################################
#
# nginx -t

# Returns (exit code, output) of nginx -t on the config.  Its messages
# go to stderr and a separate startup log; whatever it appends to the
# error log is excluded from the alert check.
sub test_config {
    my ($self, $conf) = @_;
    my $dir = $self->{_testdir};
    $conf //= 'nginx.conf';

    my $before = $self->_log_size();
    my ($code, $out) = _capture(nginx_binary(), '-t', '-p', "$dir/",
        '-c', $conf, '-e', "$dir/test_config.log",
        $self->_cmdline_globals);
    my $after = $self->_log_size();
    push @{$self->{_skip_ranges}}, [$before, $after] if $after > $before;

    Test::More::diag("nginx -t: exit $code\n$out") if verbose();
    return ($code, $out);
}

###############################################################################
#
# Log checks and teardown.

my $PROBLEM = qr/
    ^(?:\S+\s\S+|nginx:)\s\[(?:alert|emerg|crit)\]\s
    | \sexited\ on\ signal\ \d+
    | ^thread\ .*\ panicked\ at\           # Rust panic (module)
    | ERROR:\ AddressSanitizer
    | ERROR:\ LeakSanitizer
    | WARNING:\ ThreadSanitizer
    | ERROR:\ MemorySanitizer
    | runtime\ error:
/x;

sub _problems {
    my ($self) = @_;
    my $dir = $self->{_testdir};
    my @found;

    my $log = slurp("$dir/error.log") // '';
    # blank out ranges written by nginx -t (keep offsets stable)
    for my $r (@{$self->{_skip_ranges}}) {
        my ($from, $to) = @$r;
        next if $from >= length $log;
        $to = length $log if $to > length $log;
        substr($log, $from, $to - $from) = "\n" x ($to - $from);
    }

    my $stderr = slurp("$dir/stderr") // '';

    for my $line (split(/\n/, $log), split(/\n/, $stderr)) {
        next unless $line =~ $PROBLEM;
        next if grep { $line =~ $_ } @{$self->{_ignore}};
        push @found, $line;
    }

    return (@found, @{$self->{_notes}});
}

sub _label {
    my ($self) = @_;
    return defined $self->{_name} ? "$self->{_name}: " : '';
}

# the declared plan: a number, 'SKIP' (skip_all), 'NO PLAN' or ''
sub _current_plan {
    my $plan = eval { Test2::API::test2_stack()->top->plan };
    return defined $plan ? $plan : '';
}

sub _check_logs {
    my ($self) = @_;
    my @p = $self->_problems();
    my $tb = Test::More->builder;
    my $label = $self->_label . 'no alerts in error.log';

    if ($self->{_log_checks}) {
        $tb->todo_start('alerts') if $self->{_todo_alerts};
        Test::More::is(join("\n", @p), '', $label);
        $tb->todo_end if $self->{_todo_alerts};
    } elsif (@p && _current_plan() ne 'SKIP') {
        # not accounted for in the plan: still never hide problems
        Test::More::diag("error log problems in $self->{_testdir}:\n"
            . join("\n", @p));
        Test::More::ok(0, $label) if _current_plan() =~ /^\d+$/;
    }
}

sub _finalize {
    my ($self) = @_;
    return if $self->{_finalized} || $self->{_owner} != $$;
    $self->{_finalized} = 1;
    local ($?, $!, $@);

    $self->stop();
    $self->_check_logs();

    my $dir = $self->{_testdir};
    if ($ENV{TEST_NGINX_CATLOG}) {
        Test::More::diag("--- $dir/error.log:\n"
            . (slurp("$dir/error.log") // ''));
    }
    if ($ENV{TEST_NGINX_LEAVE}) {
        Test::More::diag("test directory left: $dir");
    } elsif ($self->{_cleanup}) {
        remove_tree($dir);
    }
}

sub DESTROY {
    my ($self) = @_;
    $self->_finalize();
}

# Runs before Test::Builder's END (END blocks run in reverse order of
# definition, and Test::More was loaded first), so the log checks are
# counted.  Stops everything still running in parallel first.
END {
    local ($?, $!, $@);
    my @objs = grep { defined && $_->{_owner} == $$ && !$_->{_finalized} }
        @REGISTRY;
    $_->stop_daemons() for @objs;
    _stop_many(@objs);
    $_->_finalize() for @objs;
}

###############################################################################
#
# HTTP client.

sub log_out {
    return unless verbose();
    my ($msg) = @_;
    $msg =~ s/^/# >> /gm;
    print STDERR $msg, ($msg =~ /\n\z/ ? '' : "\n");
}

sub log_in {
    return unless verbose();
    my ($msg) = @_;
    $msg = '' unless defined $msg;
    $msg =~ s/^/# << /gm;
    print STDERR $msg, ($msg =~ /\n\z/ ? '' : "\n");
}

sub _ssl_options {
    my (%extra) = @_;
    require IO::Socket::SSL;
    return (
        SSL_verify_mode => IO::Socket::SSL::SSL_VERIFY_NONE(),
        map { $_ => $extra{$_} } grep { /^SSL_/ } keys %extra,
    );
}

# Connected (optionally TLS) client socket, or undef.
# Options: PeerAddr ('host:port'), port (real port number), SSL, timeout.
sub _connect {
    my (%extra) = @_;
    my $peer = $extra{PeerAddr}
        // '127.0.0.1:' . ($extra{port} // port(8080));
    my $timeout = scaled($extra{timeout} // 8);

    my $s = IO::Socket::IP->new(PeerAddr => $peer, Proto => 'tcp',
        Timeout => $timeout);
    unless ($s) {
        log_in("connect to $peer failed: $@");
        return undef;
    }

    if ($extra{SSL}) {
        require IO::Socket::SSL;
        my $ok = IO::Socket::SSL->start_SSL($s, _ssl_options(%extra),
            Timeout => $timeout);
        unless ($ok) {
            no warnings 'once';
            log_in("SSL handshake with $peer failed: "
                . ($IO::Socket::SSL::SSL_ERROR // ''));
            return undef;
        }
    }

    $s->autoflush(1);
    return $s;
}

# write everything or give up at the deadline
sub _write_all {
    my ($s, $data, $timeout) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $deadline = Time::HiRes::time() + scaled($timeout // 8);
    my $sel = IO::Select->new($s);
    my $off = 0;
    while ($off < length $data) {
        my $left = $deadline - Time::HiRes::time();
        return 0 if $left <= 0 || !$sel->can_write($left);
        my $n = $s->syswrite($data, length($data) - $off, $off);
        return 0 unless defined $n;
        $off += $n;
    }
    return 1;
}

# one read of at most 64k: data, '' on EOF/error, undef on timeout
sub _read_some {
    my ($s, $timeout) = @_;
    my $pending = $s->can('pending') ? $s->pending : 0;
    unless ($pending) {
        return undef unless IO::Select->new($s)->can_read($timeout);
    }
    my $n = $s->sysread(my $buf, 65536);
    return defined $n && $n > 0 ? $buf : '';
}

sub http {
    my ($request, %extra) = @_;

    my $s = $extra{socket} // _connect(%extra) // return undef;

    if (defined $request && length $request) {
        log_out($request);
        _write_all($s, $request, $extra{timeout}) or return undef;
    }

    return $s if $extra{start};
    return http_end($s, %extra);
}

sub http_start {
    my ($request, %extra) = @_;
    return http($request, %extra, start => 1);
}

# read until the server closes (or the deadline); returns the response,
# undef if nothing arrived
sub http_end {
    my ($s, %extra) = @_;
    my $deadline = Time::HiRes::time() + scaled($extra{timeout} // 8);
    my $reply = '';

    while (1) {
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0) {
            log_in("timed out");
            last;
        }
        my $chunk = _read_some($s, $left);
        next unless defined $chunk;
        last if $chunk eq '';
        $reply .= $chunk;
    }

    close $s;
    log_in($reply);
    return length $reply ? $reply : undef;
}

sub http_get {
    my ($url, %extra) = @_;
    return http_request('GET', $url, undef, %extra);
}

sub http_head {
    my ($url, %extra) = @_;
    return http_request('HEAD', $url, undef, %extra);
}

sub http_post {
    my ($url, $body, %extra) = @_;
    return http_request('POST', $url, $body // '', %extra);
}

# http_request($method, $uri, $body, headers => { Name => value }, %extra)
# An HTTP/1.0 request (the server closes the connection); Content-Length
# is added when a body is given.
sub http_request {
    my ($method, $url, $body, %extra) = @_;
    my $crlf = "\x0d\x0a";
    my $req = "$method $url HTTP/1.0${crlf}Host: localhost${crlf}";

    my $headers = $extra{headers} // {};
    for my $name (sort keys %$headers) {
        $req .= "$name: $headers->{$name}${crlf}";
    }
    $req .= "Content-Length: " . length($body) . $crlf if defined $body;
    $req .= $crlf;
    $req .= $body if defined $body;

    return http($req, %extra);
}

sub http_status {
    my ($reply) = @_;
    return undef unless defined $reply;
    return $reply =~ m{^HTTP/\d\.\d (\d{3})} ? $1 : undef;
}

# the body of a response, chunked transfer-encoding decoded
sub http_content {
    my ($reply) = @_;
    return undef unless defined $reply;
    my ($head, $body) = split /\x0d?\x0a\x0d?\x0a/, $reply, 2;
    return undef unless defined $body;

    return $body
        unless $head =~ /^Transfer-Encoding:\s*chunked\s*$/mi;

    my $out = '';
    while ($body =~ s/^([0-9a-fA-F]+)[^\x0a]*\x0a//) {
        my $len = hex $1;
        last if $len == 0;
        $out .= substr($body, 0, $len, '');
        $body =~ s/^\x0d?\x0a//;
    }
    return $out;
}

# http_json($target, $method, $uri, $body, %extra)
#
# $target: a Test::Nginx object (its http port: the node's own for
# cluster nodes, else port(8080)), a real port number or 'host:port'.
# $body: a perl structure (JSON-encoded) or a string.
# Returns (status, decoded JSON or undef, raw response).
sub http_json {
    my ($target, $method, $uri, $body, %extra) = @_;

    if (blessed($target) && $target->can('http_port')) {
        $extra{port} = $target->http_port;
    } elsif (defined $target && looks_like_number($target)) {
        $extra{port} = $target;
    } elsif (defined $target) {
        $extra{PeerAddr} = $target;
    }

    my $json = JSON::PP->new->utf8->canonical->allow_nonref;
    my %headers = %{$extra{headers} // {}};
    if (ref $body) {
        $body = $json->encode($body);
        $headers{'Content-Type'} //= 'application/json';
    }
    $extra{headers} = \%headers;

    my $reply = http_request($method, $uri, $body, %extra);
    my $status = http_status($reply);
    my $content = http_content($reply);

    my $data;
    if (defined $content && $content =~ /\S/) {
        $data = eval { $json->decode($content) };
    }

    return ($status, $data, $reply);
}

sub http_port {
    my ($self) = @_;
    return $self->{_http_port} // port(8080);
}

1;
