package Test::Nginx::Stream;

# Stream (TCP/UDP, optionally TLS) client for tests, nginx-tests style.

=head1 NAME

Test::Nginx::Stream - raw stream client for nginx tests

=head1 SYNOPSIS

    use Test::Nginx;
    use Test::Nginx::Stream qw/ stream /;

    # connect (dies if the connection cannot be made)
    my $s = stream('127.0.0.1:' . port(8081));

    $s->write("ping\n");
    my $data = $s->read();                  # one read, '' on EOF/timeout

    # write, then read until EOF, until 4 bytes, or for 1 read
    my $all = $s->io("ping\n");
    my $four = $s->io("ping\n", length => 4);
    my $one = $s->io("ping\n", read => 1, timeout => 2);

    # TLS (certificate not verified unless SSL_verify_mode is given);
    # other SSL_* options are passed to IO::Socket::SSL
    my $tls = stream(PeerAddr => '127.0.0.1:' . port(8082), SSL => 1,
        SSL_alpn_protocols => ['zs']);
    print $tls->socket->get_sslversion;

    # UDP
    my $u = stream(PeerAddr => '127.0.0.1:' . port(8083), Proto => 'udp');

    $s->sockhost; $s->sockport; $s->peerhost; $s->peerport;
    $s->close;

Options of C<stream()> / C<< Test::Nginx::Stream->new() >>: C<PeerAddr>
(default C<< '127.0.0.1:' . port(8080) >>), C<Proto> (C<tcp>/C<udp>),
C<SSL>, C<SSL_*>, C<timeout> (seconds, default 8, scaled by
TEST_NGINX_TIMEOUT_SCALE; also the default for read/io).

=cut

use strict;
use warnings;

use Exporter qw(import);
use IO::Select;
use IO::Socket::IP;
use Time::HiRes ();

use Test::Nginx::Util qw(port scaled verbose);

our @EXPORT = qw(stream);

sub stream {
    return Test::Nginx::Stream->new(@_ == 1 ? (PeerAddr => $_[0]) : @_);
}

sub new {
    my ($class, %args) = @_;

    my $peer = $args{PeerAddr} // '127.0.0.1:' . port(8080);
    my $proto = lc($args{Proto} // 'tcp');
    my $timeout = $args{timeout} // 8;

    my $s = IO::Socket::IP->new(
        PeerAddr => $peer,
        Proto => $proto,
        ($proto eq 'tcp' ? (Timeout => scaled($timeout)) : ()),
    ) or die "stream: cannot connect to $peer: $@\n";

    if ($args{SSL}) {
        require IO::Socket::SSL;
        my @ssl = map { $_ => $args{$_} } grep { /^SSL_/ } keys %args;
        IO::Socket::SSL->start_SSL($s,
            SSL_verify_mode => IO::Socket::SSL::SSL_VERIFY_NONE(),
            Timeout => scaled($timeout),
            @ssl,
        ) or do {
            no warnings 'once';
            die "stream: SSL handshake with $peer failed: "
                . ($IO::Socket::SSL::SSL_ERROR // '') . "\n";
        };
    }

    $s->autoflush(1);

    return bless {
        _socket => $s,
        _proto => $proto,
        _timeout => $timeout,
    }, $class;
}

sub socket { return $_[0]->{_socket} }

sub sockaddr { return $_[0]->{_socket}->sockaddr }
sub sockhost { return $_[0]->{_socket}->sockhost }
sub sockport { return $_[0]->{_socket}->sockport }
sub peeraddr { return $_[0]->{_socket}->peeraddr }
sub peerhost { return $_[0]->{_socket}->peerhost }
sub peerport { return $_[0]->{_socket}->peerport }

sub close {
    my ($self) = @_;
    CORE::close($self->{_socket}) if $self->{_socket};
    return 1;
}

sub _trace {
    my ($dir, $data) = @_;
    return unless verbose();
    (my $m = $data) =~ s/^/# $dir /gm;
    print STDERR $m, ($m =~ /\n\z/ ? '' : "\n");
}

# write all of $data; returns the number of bytes written (less on error
# or timeout).  For UDP, one datagram.
sub write {
    my ($self, $data, %extra) = @_;
    my $s = $self->{_socket};
    local $SIG{PIPE} = 'IGNORE';

    _trace('>>', $data);

    if ($self->{_proto} eq 'udp') {
        my $n = $s->send($data);
        return defined $n ? $n : 0;
    }

    my $deadline = Time::HiRes::time()
        + scaled($extra{timeout} // $self->{_timeout});
    my $sel = IO::Select->new($s);
    my $off = 0;

    while ($off < length $data) {
        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0 || !$sel->can_write($left);
        my $n = $s->syswrite($data, length($data) - $off, $off);
        last unless defined $n;
        $off += $n;
    }

    return $off;
}

# one read: the data, or '' on EOF, error or timeout
sub read {
    my ($self, %extra) = @_;
    my $s = $self->{_socket};
    my $timeout = scaled($extra{timeout} // $self->{_timeout});

    my $pending = $s->can('pending') ? $s->pending : 0;
    unless ($pending) {
        unless (IO::Select->new($s)->can_read($timeout)) {
            _trace('<<', '(timeout)');
            return '';
        }
    }

    my $buf;
    if ($self->{_proto} eq 'udp') {
        defined $s->recv($buf, 65536) or $buf = '';
    } else {
        my $n = $s->sysread($buf, 65536);
        $buf = '' unless defined $n && $n > 0;
    }

    _trace('<<', $buf);
    return $buf;
}

# io($data, length => N, read => N, timeout => T)
#
# Writes $data (if non-empty), then reads until EOF or the deadline,
# stopping early once 'length' bytes were collected or after 'read'
# reads.  UDP defaults to a single read.
sub io {
    my ($self, $data, %extra) = @_;
    my $length = $extra{length};
    my $reads = $extra{read};
    $reads = 1 if !defined $reads && !defined $length
        && $self->{_proto} eq 'udp';

    $self->write($data, %extra) if defined $data && length $data;

    my $deadline = Time::HiRes::time()
        + scaled($extra{timeout} // $self->{_timeout});
    my $got = '';
    my $n = 0;

    while (1) {
        last if defined $length && length($got) >= $length;
        last if defined $reads && $n >= $reads;

        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0;

        # the deadline is absolute: read() scales, so unscale here
        my $chunk = $self->read(timeout => $left / scaled(1));
        last if $chunk eq '';
        $got .= $chunk;
        $n++;
    }

    return $got;
}

1;
