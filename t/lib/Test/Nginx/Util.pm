package Test::Nginx::Util;

# Low-level helpers shared by Test::Nginx, Test::Nginx::Stream and
# Test::Nginx::Cluster: deadline polling, the per-process port map and
# a few /proc based process helpers.  Written from scratch for this
# project; only core perl is used.

=head1 NAME

Test::Nginx::Util - polling, port map and process helpers for the test harness

=head1 SYNOPSIS

    use Test::Nginx::Util qw(wait_for port scaled);

    # map a symbolic port (as written in configs: 127.0.0.1:8080) to a
    # free real port; the same key always yields the same port within
    # one test process
    my $p = port(8080);

    # poll instead of sleeping; returns the condition's true value,
    # or false once the deadline passed
    wait_for(sub { -e $file }, timeout => 5, interval => 0.05,
        name => 'pid file')
        or die "no pid file";

=head1 ENVIRONMENT

C<TEST_NGINX_TIMEOUT_SCALE> multiplies every harness timeout (wait_for
deadlines, socket reads, shutdown deadlines); useful for slow sanitizer
builds.  Default 1.

=cut

use strict;
use warnings;

use Exporter qw(import);
use Fcntl qw(:flock O_CREAT O_RDWR);
use File::Spec;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes ();

our @EXPORT_OK = qw(
    wait_for port port_map scaled
    proc_children proc_alive proc_cmdline
    slurp spit verbose
);

###############################################################################

# Multiply a timeout by TEST_NGINX_TIMEOUT_SCALE.
sub scaled {
    my ($seconds) = @_;
    my $scale = $ENV{TEST_NGINX_TIMEOUT_SCALE};
    $scale = 1 unless defined $scale && $scale =~ /^\d+(?:\.\d+)?$/
        && $scale > 0;
    return $seconds * $scale;
}

sub verbose { return $ENV{TEST_NGINX_VERBOSE} }

# wait_for(sub { ... }, timeout => 10, interval => 0.05, name => '...')
#
# Calls the condition until it returns a true value (which is returned)
# or the (scaled) deadline passes (returns a false value).  The condition
# is always evaluated at least once, and once more right at the deadline.
sub wait_for {
    my ($cond, %opts) = @_;
    my $timeout = scaled(defined $opts{timeout} ? $opts{timeout} : 10);
    my $interval = defined $opts{interval} ? $opts{interval} : 0.05;
    my $deadline = Time::HiRes::time() + $timeout;

    while (1) {
        my $r = $cond->();
        return $r if $r;

        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0) {
            if (defined $opts{name} && verbose()) {
                print STDERR "# wait_for: timed out after ${timeout}s "
                    . "waiting for $opts{name}\n";
            }
            return $r;
        }
        Time::HiRes::sleep($interval < $left ? $interval : $left);
    }
}

###############################################################################

# Port map.
#
# Tests refer to ports symbolically (8080, 8081, ... as in nginx-tests);
# port(N) maps each symbol to a real free port, chosen once per process,
# so all Test::Nginx objects of a test file (e.g. the nodes of a cluster)
# share one map.
#
# Ports are picked at random below the kernel's ephemeral range (so that
# client connections made by the tests can never grab a port nginx is
# about to bind), checked by binding TCP and UDP on 127.0.0.1, and
# reserved against concurrently running test files (prove -j) with an
# flock()ed file per port that is held for the life of this process.

my %PORTS;      # symbolic key => real port
my %LOCKS;      # real port => lock file handle (kept open)

sub port {
    my ($key, %opts) = @_;
    die "port() needs a key\n" unless defined $key;
    # every port is checked for both TCP and UDP, so 'udp' needs nothing
    return $PORTS{$key} if defined $PORTS{$key};
    my $p = _alloc_port();
    return $PORTS{$key} = $p;
}

sub port_map { return {%PORTS} }

sub _ephemeral_range {
    my ($lo, $hi) = (32768, 60999);
    if (open my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range') {
        my $line = <$fh> // '';
        ($lo, $hi) = ($1, $2) if $line =~ /(\d+)\s+(\d+)/;
    }
    return ($lo, $hi);
}

sub _candidate_range {
    my ($lo, $hi) = _ephemeral_range();
    return (10000, $lo - 1) if $lo - 1 - 10000 >= 1000;
    return ($hi + 1, 65535) if 65535 - ($hi + 1) >= 1000;
    return;
}

sub _lock_dir {
    my $dir = File::Spec->catdir(File::Spec->tmpdir(), 'nginx-test-ports');
    unless (-d $dir) {
        mkdir $dir;
        chmod 01777, $dir;
    }
    return $dir;
}

sub _port_is_free {
    my ($p) = @_;
    for my $proto (qw(tcp udp)) {
        my $s = IO::Socket::INET->new(
            LocalAddr => '127.0.0.1',
            LocalPort => $p,
            Proto => $proto,
            ReuseAddr => 1,
            ($proto eq 'tcp' ? (Listen => 1) : ()),
        ) or return 0;
        close $s;
    }
    return 1;
}

sub _alloc_port {
    my %taken = map { $_ => 1 } grep { defined } values %PORTS;
    my @range = _candidate_range();

    if (@range) {
        my $dir = _lock_dir();
        for (1 .. 1000) {
            my $p = $range[0] + int(rand($range[1] - $range[0] + 1));
            next if $taken{$p};

            sysopen(my $fh, "$dir/$p", O_CREAT | O_RDWR, 0666) or next;
            unless (flock($fh, LOCK_EX | LOCK_NB)) {
                close $fh;
                next;
            }
            unless (_port_is_free($p)) {
                close $fh;
                next;
            }
            $LOCKS{$p} = $fh;
            return $p;
        }
    }

    # fallback: let the kernel pick (may be inside the ephemeral range)
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => 0, Proto => 'tcp', Listen => 1, ReuseAddr => 1)
            or die "cannot bind a port: $!\n";
        my $p = $s->sockport();
        close $s;
        return $p if !$taken{$p} && _port_is_free($p);
    }
    die "cannot find a free port\n";
}

###############################################################################

# Process helpers (Linux /proc).

sub _proc_stat {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return;
    my $line = <$fh> // return;
    # "pid (comm) state ppid ..." - comm may contain spaces or parens
    $line =~ /\)\s+(\S)\s+(\d+)/ or return;
    return ($1, $2);
}

# true if the process exists and is not a zombie
sub proc_alive {
    my ($pid) = @_;
    return 0 unless $pid;
    my ($state) = _proc_stat($pid);
    return defined $state && $state ne 'Z' && $state ne 'X' ? 1 : 0;
}

# live (non-zombie) children of a process
sub proc_children {
    my ($ppid) = @_;
    return () unless $ppid;
    opendir my $dh, '/proc' or return ();
    my @kids;
    for my $pid (grep { /^\d+$/ } readdir $dh) {
        my ($state, $parent) = _proc_stat($pid);
        next unless defined $state;
        push @kids, $pid if $parent == $ppid && $state ne 'Z';
    }
    return sort { $a <=> $b } @kids;
}

# the process title ("nginx: worker process", ...) or ''
sub proc_cmdline {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/cmdline" or return '';
    local $/;
    my $s = <$fh> // '';
    $s =~ s/\0+$//;
    $s =~ s/\0/ /g;
    return $s;
}

###############################################################################

sub slurp {
    my ($path) = @_;
    open my $fh, '<:raw', $path or return undef;
    local $/;
    my $s = <$fh>;
    return defined $s ? $s : '';
}

sub spit {
    my ($path, $content, $mode) = @_;
    open my $fh, '>:raw', $path or die "cannot write $path: $!\n";
    print $fh $content;
    close $fh or die "cannot write $path: $!\n";
    chmod $mode, $path if defined $mode;
    return $path;
}

1;
